"""The special-token attributes and the add_tokens API of transformers' tokenizers.

Why apart from the tokenizer: which tokens are special (bos/eos/unk/pad, the optional
sep/cls/mask, and the extra ones such as `<lang:xx>`), their ids, and how users add tokens
(`add_tokens`, `add_special_tokens`: new ids after the sentencepiece vocabulary) are one idea,
shared by every transformers tokenizer; the tokenizer supplies the vocabulary and the
`AddedTokens` table (`added_tokens.py`) that matches added tokens in text.
"""

from __future__ import annotations

from s2t_jax.frontend.added_tokens import token_content

__all__ = ["SPECIAL_TOKEN_NAMES", "SpecialTokensMixin"]

# transformers' named special tokens, in its order (all_special_tokens follows it).
SPECIAL_TOKEN_NAMES = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


class SpecialTokensMixin:
    """Named and extra special tokens, their ids, and adding tokens.

    The class using it sets the SPECIAL_TOKEN_NAMES attributes (a string or None),
    `extra_special_tokens` (a list) and `added_tokens` (an `AddedTokens`), and provides
    `get_vocab` and `convert_tokens_to_ids`.
    """

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return dict(sorted(self.added_tokens.ids.items(), key=lambda kv: kv[1]))

    @property
    def added_tokens_decoder(self) -> dict[int, str]:
        """id -> content of every added token (transformers gives AddedToken objects)."""
        return dict(sorted(self.added_tokens.tokens.items()))

    def get_added_vocab(self) -> dict[str, int]:
        return self.added_tokens_encoder

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set (transformers 5: without the extra ones)."""
        named = {name: getattr(self, name, None) for name in SPECIAL_TOKEN_NAMES}
        return {name: token for name, token in named.items() if token is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys([*self.special_tokens_map.values(), *self.extra_special_tokens]))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def additional_special_tokens(self) -> list[str]:
        """transformers 4's name for `extra_special_tokens`."""
        return list(self.extra_special_tokens)

    @property
    def extra_special_tokens_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.extra_special_tokens)

    def _token_id(self, token: str | None) -> int | None:
        return None if token is None else self.convert_tokens_to_ids(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._token_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._token_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._token_id(self.pad_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._token_id(self.unk_token)

    @property
    def sep_token_id(self) -> int | None:
        return self._token_id(self.sep_token)

    @property
    def cls_token_id(self) -> int | None:
        return self._token_id(self.cls_token)

    @property
    def mask_token_id(self) -> int | None:
        return self._token_id(self.mask_token)

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Match `new_tokens` in text before sentencepiece; those not in the vocabulary get new
        ids after it (len(tokenizer) onwards). Returns how many ids were added."""
        if not new_tokens:
            return 0
        if not isinstance(new_tokens, (list, tuple)):
            new_tokens = [new_tokens]
        vocab = self.get_vocab()
        next_id, added = len(vocab), 0
        for token in new_tokens:
            content = token_content(token)
            if not isinstance(content, str):
                raise TypeError(f"Token {token!r} is not a string but a {type(token).__name__}.")
            if content == "" or content in self.added_tokens.ids:
                continue
            special = special_tokens or content in self.all_special_tokens
            if content in vocab:
                index = vocab[content]
            else:
                index = next_id + added
                added += 1
            if special and content not in self.all_special_tokens:
                self.extra_special_tokens.append(content)
            self.added_tokens.add(content, index, special)
        return added

    def add_special_tokens(
        self, special_tokens_dict: dict, replace_extra_special_tokens: bool = True
    ) -> int:
        """Set named special tokens (`pad_token`, ...) and/or `extra_special_tokens`
        (`additional_special_tokens`), adding those not in the vocabulary after it."""
        if not special_tokens_dict:
            return 0
        tokens = dict(special_tokens_dict)
        if "additional_special_tokens" in tokens and not tokens.get("extra_special_tokens"):
            tokens["extra_special_tokens"] = tokens.pop("additional_special_tokens")
        allowed = {*SPECIAL_TOKEN_NAMES, "extra_special_tokens"}
        to_add = []
        for key, value in tokens.items():
            if key not in allowed:
                raise ValueError(
                    f"Key {key} is not a valid special token. Valid keys are: {allowed}"
                )
            if key == "extra_special_tokens":
                if not isinstance(value, (list, tuple)):
                    raise ValueError(f"Tokens {value} for key {key} should be a list of strings")
                new = [token_content(t) for t in value]
                if replace_extra_special_tokens:
                    new = list(dict.fromkeys(new))
                    if new:
                        self.extra_special_tokens = new
                else:
                    new = [t for t in new if t not in self.extra_special_tokens]
                    self.extra_special_tokens.extend(new)
                to_add.extend(new)
            else:
                value = token_content(value)
                if not isinstance(value, str):
                    raise ValueError(f"Token {value} for key {key} should be a str")
                setattr(self, key, value)
                to_add.append(value)
        return self.add_tokens(to_add, special_tokens=True)
