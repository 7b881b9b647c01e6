"""The Speech2Text (fairseq S2T) tokenizer: sentencepiece pieces mapped through vocab.json.

Why our own: it gives the same ids and strings as `transformers.Speech2TextTokenizer` (5.x)
without pulling transformers in at run time. The rules it reproduces:
  * text is first split on special/added tokens (`</s>`, `<lang:de>`, ...), longest match first;
    the rest goes through `SentencePieceProcessor.encode(..., out_type=str)`;
  * pieces map to ids through vocab.json (fairseq's dictionary), unknown pieces to `<unk>`; the
    special tokens `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3 come from the vocabulary too;
  * encoding adds `prefix_tokens` (the target-language id when `lang_codes="mustc"`) in front and
    `</s>` at the end;
  * decoding emits special tokens verbatim followed by a space, decodes runs of ordinary pieces
    with sentencepiece (upper-cased when `do_upper_case`), and strips the result;
  * `do_lower_case` is stored and saved but, as in transformers 5, does not change encoding.
The added-token table lives in `added_tokens.py`, the special-token attributes and
`add_tokens` / `add_special_tokens` in `special_tokens.py`, the hub files in `tokenizer_files.py`, the
call / encode / pad API (pairs, targets, truncation, overflow) in `encoding.py`, and
transformers' padding and truncation rules in `padding.py`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import sentencepiece

from s2t_jax.frontend.added_tokens import AddedTokens, token_content
from s2t_jax.frontend.encoding import EncodingMixin
from s2t_jax.frontend.padding import check_side
from s2t_jax.frontend.special_tokens import SpecialTokensMixin
from s2t_jax.frontend.tokenizer_files import (
    VOCAB_FILES_NAMES,
    read_tokenizer_files,
    write_tokenizer_files,
)

__all__ = ["Speech2TextTokenizer"]

MUSTC_LANGS = ["pt", "fr", "ru", "nl", "ro", "it", "es", "de"]
LANGUAGES = {"mustc": MUSTC_LANGS}
VERY_LARGE_INTEGER = int(1e30)  # transformers' "no limit" model_max_length


def _as_id_list(token_ids) -> list[int]:
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    if isinstance(token_ids, int):
        return [token_ids]
    return [int(i) for i in token_ids]


class Speech2TextTokenizer(SpecialTokensMixin, EncodingMixin):
    """Sentencepiece + fairseq-dictionary tokenizer with transformers' Speech2Text behaviour."""

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | os.PathLike,
        spm_file: str | os.PathLike,
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        pad_token: str = "<pad>",
        unk_token: str = "<unk>",
        sep_token: str | None = None,
        cls_token: str | None = None,
        mask_token: str | None = None,
        do_upper_case: bool = False,
        do_lower_case: bool = False,
        tgt_lang: str | None = None,
        lang_codes: str | None = None,
        additional_special_tokens: list[str] | None = None,
        extra_special_tokens: list[str] | dict | None = None,
        sp_model_kwargs: dict[str, Any] | None = None,
        model_max_length: int | None = None,
        clean_up_tokenization_spaces: bool = False,
        padding_side: str = "right",
        truncation_side: str = "right",
        added_tokens_decoder: dict | None = None,
        **kwargs,
    ):
        self.vocab_file = str(vocab_file)
        self.spm_file = str(spm_file)
        self.sp_model_kwargs = dict(sp_model_kwargs or {})
        with open(vocab_file, encoding="utf-8") as f:
            self.encoder: dict[str, int] = json.load(f)
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.sp_model = sentencepiece.SentencePieceProcessor(**self.sp_model_kwargs)
        self.sp_model.Load(self.spm_file)

        self.bos_token = token_content(bos_token)
        self.eos_token = token_content(eos_token)
        self.pad_token = token_content(pad_token)
        self.unk_token = token_content(unk_token)
        self.sep_token = token_content(sep_token)
        self.cls_token = token_content(cls_token)
        self.mask_token = token_content(mask_token)
        self.do_upper_case = do_upper_case
        self.do_lower_case = do_lower_case
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.padding_side = check_side("padding_side", padding_side)
        self.truncation_side = check_side("truncation_side", truncation_side)

        additional = [token_content(t) for t in additional_special_tokens or []]

        self.lang_codes = lang_codes
        self.prefix_tokens: list[int] = []
        if lang_codes is not None:
            if lang_codes not in LANGUAGES:
                raise ValueError(
                    f"lang_codes must be one of {sorted(LANGUAGES)}, got {lang_codes!r}"
                )
            self.langs = list(LANGUAGES[lang_codes])
            self.lang_tokens = [f"<lang:{lang}>" for lang in self.langs]
            # transformers takes these ids from the sentencepiece model, not from vocab.json.
            self.lang_code_to_id = {
                lang: self.sp_model.PieceToId(tok)
                for lang, tok in zip(self.langs, self.lang_tokens)
            }
            additional = self.lang_tokens + additional
            self._tgt_lang = tgt_lang if tgt_lang is not None else self.langs[0]
            self.set_tgt_lang_special_tokens(self._tgt_lang)
        else:
            self.langs, self.lang_tokens, self.lang_code_to_id = [], [], {}
            self._tgt_lang = tgt_lang

        # As transformers: a saved extra_special_tokens list replaces additional_special_tokens
        # (and the <lang:xx> codes); a dict (named extras, transformers 4.x) adds to them.
        if isinstance(extra_special_tokens, dict):
            extra = additional + [token_content(t) for t in extra_special_tokens.values()]
        elif extra_special_tokens is not None:
            extra = [token_content(t) for t in extra_special_tokens]
        else:
            extra = additional
        named = self.special_tokens_map.values()
        self.extra_special_tokens = list(dict.fromkeys(t for t in extra if t not in named))

        # Added tokens: specials (at their vocab id, or appended after the vocabulary) plus any
        # user-added tokens saved in tokenizer_config.json's added_tokens_decoder.
        self.added_tokens = AddedTokens(added_tokens_decoder, self.all_special_tokens, self.encoder)
        self.init_kwargs = kwargs

    # ---- vocabulary ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def get_vocab(self) -> dict[str, int]:
        return {**self.encoder, **self.added_tokens.ids}

    def __len__(self) -> int:
        return len(self.get_vocab())

    @property
    def tgt_lang(self) -> str | None:
        return self._tgt_lang

    @tgt_lang.setter
    def tgt_lang(self, new_tgt_lang: str) -> None:
        self._tgt_lang = new_tgt_lang
        self.set_tgt_lang_special_tokens(new_tgt_lang)

    def set_tgt_lang_special_tokens(self, tgt_lang: str) -> None:
        """prefix_tokens = [id of <lang:tgt_lang>]; the suffix is always </s>."""
        if tgt_lang not in self.lang_code_to_id:
            raise ValueError(f"tgt_lang {tgt_lang!r} is not one of {sorted(self.lang_code_to_id)}")
        self.prefix_tokens = [self.lang_code_to_id[tgt_lang]]

    # ---- encoding -----------------------------------------------------------------------

    def tokenize(self, text: str) -> list[str]:
        """Split on added/special tokens, sentencepiece the rest."""
        pieces = self.added_tokens.split(text)
        tokens: list[str] = []
        for i, piece in enumerate(pieces):
            if not piece:
                continue
            if i % 2:  # odd positions are the matched added tokens
                tokens.append(piece)
            else:
                tokens.extend(self.sp_model.encode(piece, out_type=str))
        return tokens

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            if tokens in self.added_tokens.ids:
                return self.added_tokens.ids[tokens]
            return self.encoder.get(tokens, self.encoder[self.unk_token])
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """prefix_tokens + ids (+ pair ids: Speech2Text concatenates) + [eos]."""
        pair = token_ids_1 or []
        return self.prefix_tokens + list(token_ids_0) + list(pair) + [self.eos_token_id]

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1=None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 where build_inputs_with_special_tokens puts a special token; with
        `already_has_special_tokens`, 1 for every special id in `token_ids_0`."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError(
                    "You should not supply a second sequence if the provided sequence of ids is "
                    "already formatted with special tokens for the model."
                )
            special = set(self.all_special_ids)
            return [1 if int(i) in special else 0 for i in _as_id_list(token_ids_0)]
        body = len(token_ids_0) + len(token_ids_1 or [])
        return [1] * len(self.prefix_tokens) + [0] * body + [1]

    # ---- decoding -----------------------------------------------------------------------

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, (int, np.integer)):
            index = int(ids)
            if index in self.added_tokens.tokens:
                return self.added_tokens.tokens[index]
            return self.decoder.get(index, self.unk_token)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.convert_ids_to_tokens(i) for i in _as_id_list(ids) if i not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Special tokens verbatim plus a space; runs of pieces through sentencepiece."""
        special = set(self.all_special_tokens)
        out, run = "", []
        for token in tokens:
            if token in special:
                decoded = self.sp_model.decode(run)
                out += (decoded.upper() if self.do_upper_case else decoded) + token + " "
                run = []
            else:
                run.append(token)
        decoded = self.sp_model.decode(run)
        out += decoded.upper() if self.do_upper_case else decoded
        return out.strip()

    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        for before, after in (
            (" .", "."),
            (" ?", "?"),
            (" !", "!"),
            (" ,", ","),
            (" ' ", "'"),
            (" n't", "n't"),
            (" 'm", "'m"),
            (" 's", "'s"),
            (" 've", "'ve"),
            (" 're", "'re"),
        ):
            text = text.replace(before, after)
        return text

    def decode(
        self,
        token_ids,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str:
        tokens = self.convert_ids_to_tokens(_as_id_list(token_ids), skip_special_tokens)
        text = self.convert_tokens_to_string(tokens)
        clean = (
            self.clean_up_tokenization_spaces
            if clean_up_tokenization_spaces is None
            else clean_up_tokenization_spaces
        )
        return self.clean_up_tokenization(text) if clean else text

    def batch_decode(
        self,
        sequences,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [
            self.decode(s, skip_special_tokens, clean_up_tokenization_spaces) for s in sequences
        ]

    # ---- persistence --------------------------------------------------------------------

    def to_config(self) -> dict[str, Any]:
        """tokenizer_config.json as transformers 5 writes it (constructor keywords it does not
        know are kept, as transformers keeps them)."""
        config = {
            **self.init_kwargs,
            **{name: token for name, token in self.special_tokens_map.items()},
            "added_tokens_decoder": self.added_tokens.to_config(self.all_special_tokens),
            "backend": "custom",
            "bos_token": self.bos_token,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "do_lower_case": self.do_lower_case,
            "do_upper_case": self.do_upper_case,
            "eos_token": self.eos_token,
            "extra_special_tokens": list(self.extra_special_tokens),
            "lang_codes": self.lang_codes,
            "model_max_length": self.model_max_length,
            "pad_token": self.pad_token,
            "sp_model_kwargs": self.sp_model_kwargs,
            "tgt_lang": self.tgt_lang,
            "tokenizer_class": "Speech2TextTokenizer",
            "unk_token": self.unk_token,
        }
        for name in ("padding_side", "truncation_side"):
            if getattr(self, name) != "right":
                config[name] = getattr(self, name)
        return config

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        special_tokens_map: bool = False,
        processor_class: str | None = None,
    ) -> tuple[str, ...]:
        """Write vocab.json, sentencepiece.bpe.model and tokenizer_config.json (and, for the
        older hub layout, special_tokens_map.json), plus added_tokens.json when tokens were added
        after the vocabulary. Returns the paths written."""
        config = self.to_config()
        if processor_class is not None:
            config["processor_class"] = processor_class
        tokens = None
        if special_tokens_map:
            tokens = dict(self.special_tokens_map)
            if self.extra_special_tokens:
                tokens["additional_special_tokens"] = list(self.extra_special_tokens)
        added = {t: i for t, i in self.added_tokens_encoder.items() if i >= self.vocab_size}
        return write_tokenizer_files(
            save_directory, self.encoder, self.spm_file, self.sp_model, config, tokens, added
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> Speech2TextTokenizer:
        """Load vocab.json + sentencepiece.bpe.model + tokenizer_config.json
        (+ special_tokens_map.json)."""
        vocab_file, spm_file, config = read_tokenizer_files(directory)
        return cls(vocab_file, spm_file, **{**config, **kwargs})

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, lang_codes={self.lang_codes!r}, "
            f"tgt_lang={self.tgt_lang!r}, do_upper_case={self.do_upper_case})"
        )
