"""Added tokens: the strings the tokenizer matches in text before sentencepiece sees it.

Why apart from the tokenizer: transformers keeps a table of "added" tokens (the special tokens,
`<lang:xx>` codes and any user-added ones), each with an id and lstrip/rstrip flags. Text is cut
on them, longest match first, and only the pieces between them go through sentencepiece. This
module is that table: built from `tokenizer_config.json`'s `added_tokens_decoder`, grown by
`add_tokens` (new ids after the vocabulary), used to split text and to map ids back, and
written back in the same format.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["AddedTokens", "token_content"]

FLAGS = ("lstrip", "rstrip", "special", "normalized")


def token_content(token) -> str | None:
    """A token as transformers saves it: a string or an AddedToken dict ({"content": ...})."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict) and "content" in token:
        return token["content"]
    raise TypeError(f"cannot read a special token from {token!r}")


class AddedTokens:
    """content <-> id for every added token, with its saved lstrip/rstrip/special flags."""

    def __init__(
        self,
        saved: Mapping | None,
        special_tokens: Iterable[str],
        vocab: Mapping[str, int],
    ):
        """`saved`: `added_tokens_decoder` ({id: token}); special tokens not in it take their
        vocabulary id, or the next id after the vocabulary and the tokens added so far."""
        self.ids: dict[str, int] = {}
        self.flags: dict[str, dict[str, bool]] = {}
        for index, entry in sorted((saved or {}).items(), key=lambda kv: int(kv[0])):
            content = token_content(entry)
            self.ids[content] = int(index)
            if isinstance(entry, dict):
                self.flags[content] = {k: bool(entry.get(k, False)) for k in FLAGS}
        for token in special_tokens:
            if token not in self.ids:
                self.ids[token] = vocab.get(token, len(set(vocab) | set(self.ids)))
        self._rebuild()

    def _rebuild(self) -> None:
        self.tokens = {v: k for k, v in self.ids.items()}  # id -> content
        longest_first = sorted(self.ids, key=len, reverse=True)
        self._pattern = (
            re.compile("(" + "|".join(re.escape(t) for t in longest_first) + ")")
            if longest_first
            else None
        )

    def add(self, token: str, index: int, special: bool) -> None:
        """Match `token` in text from now on, as id `index` (transformers' add_tokens: a
        special token is not normalised, an ordinary one is)."""
        self.ids[token] = index
        self.flags[token] = {"lstrip": False, "rstrip": False, "special": special}
        self.flags[token]["normalized"] = not special
        self._rebuild()

    def split(self, text: str) -> list[str]:
        """[text, token, text, token, ..., text]: odd positions are the matched added tokens;
        a token's lstrip/rstrip flags strip the whitespace beside it."""
        pieces = [text] if self._pattern is None else self._pattern.split(text)
        for i, piece in enumerate(pieces):
            flags = self.flags.get(piece) if i % 2 else None
            if flags:
                if flags["rstrip"] and i + 1 < len(pieces):
                    pieces[i + 1] = pieces[i + 1].lstrip()
                if flags["lstrip"] and i > 0:
                    pieces[i - 1] = pieces[i - 1].rstrip()
        return pieces

    def to_config(self, special_tokens: Iterable[str]) -> dict[str, dict]:
        """`added_tokens_decoder` for tokenizer_config.json, as transformers 5 writes it."""
        special = set(special_tokens)
        return {
            str(index): {
                "content": token,
                "lstrip": self.flags.get(token, {}).get("lstrip", False),
                "normalized": self.flags.get(token, {}).get("normalized", False),
                "rstrip": self.flags.get(token, {}).get("rstrip", False),
                "single_word": False,
                "special": token in special or self.flags.get(token, {}).get("special", False),
            }
            for index, token in sorted(self.tokens.items())
        }
