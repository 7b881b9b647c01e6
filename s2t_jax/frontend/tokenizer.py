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
The added-token table lives in `added_tokens.py`, the hub files in `tokenizer_files.py`, and
transformers' padding and truncation rules in `padding.py`.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import sentencepiece

from s2t_jax.frontend.added_tokens import AddedTokens, token_content
from s2t_jax.frontend.model_inputs import BatchEncoding
from s2t_jax.frontend.padding import pad_id_lists, round_up, token_strategies
from s2t_jax.frontend.tokenizer_files import (
    VOCAB_FILES_NAMES,
    read_tokenizer_files,
    write_tokenizer_files,
)

__all__ = ["Speech2TextTokenizer"]

MUSTC_LANGS = ["pt", "fr", "ru", "nl", "ro", "it", "es", "de"]
LANGUAGES = {"mustc": MUSTC_LANGS}
VERY_LARGE_INTEGER = int(1e30)  # transformers' "no limit" model_max_length
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def _as_id_list(token_ids) -> list[int]:
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    if isinstance(token_ids, int):
        return [token_ids]
    return [int(i) for i in token_ids]


class Speech2TextTokenizer:
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
        self.do_upper_case = do_upper_case
        self.do_lower_case = do_lower_case
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.padding_side = padding_side

        extra = [token_content(t) for t in additional_special_tokens or []]
        if isinstance(extra_special_tokens, dict):  # transformers 4.x named extras
            extra += [token_content(t) for t in extra_special_tokens.values()]
        elif extra_special_tokens:
            extra += [token_content(t) for t in extra_special_tokens]

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
            extra = self.lang_tokens + extra
            self._tgt_lang = tgt_lang if tgt_lang is not None else self.langs[0]
            self.set_tgt_lang_special_tokens(self._tgt_lang)
        else:
            self.langs, self.lang_tokens, self.lang_code_to_id = [], [], {}
            self._tgt_lang = tgt_lang

        named = [t for t in (self.bos_token, self.eos_token, self.unk_token, self.pad_token) if t]
        self.extra_special_tokens = list(dict.fromkeys(t for t in extra if t not in named))
        self.all_special_tokens = list(dict.fromkeys(named + self.extra_special_tokens))

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
    def all_special_ids(self) -> list[int]:
        return [self.added_tokens.ids[t] for t in self.all_special_tokens]

    @property
    def bos_token_id(self) -> int | None:
        return self.convert_tokens_to_ids(self.bos_token) if self.bos_token else None

    @property
    def eos_token_id(self) -> int | None:
        return self.convert_tokens_to_ids(self.eos_token) if self.eos_token else None

    @property
    def pad_token_id(self) -> int | None:
        return self.convert_tokens_to_ids(self.pad_token) if self.pad_token else None

    @property
    def unk_token_id(self) -> int | None:
        return self.convert_tokens_to_ids(self.unk_token) if self.unk_token else None

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
        """prefix_tokens + ids (+ pair ids) + [eos]."""
        pair = token_ids_1 or []
        return self.prefix_tokens + list(token_ids_0) + list(pair) + [self.eos_token_id]

    def get_special_tokens_mask(self, token_ids_0: list[int], token_ids_1=None) -> list[int]:
        body = len(token_ids_0) + len(token_ids_1 or [])
        return [1] * len(self.prefix_tokens) + [0] * body + [1]

    def _encode_one(
        self, text: str, add_special_tokens: bool, trunc: bool, max_length
    ) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(
                f"text must be a string or a list of strings, got {type(text).__name__}"
            )
        ids = self.convert_tokens_to_ids(self.tokenize(text))
        if trunc:
            extra = len(self.prefix_tokens) + 1 if add_special_tokens else 0
            ids = ids[: max(0, len(ids) - max(0, len(ids) + extra - max_length))]
        return self.build_inputs_with_special_tokens(ids) if add_special_tokens else ids

    def encode(
        self,
        text: str,
        add_special_tokens: bool = True,
        truncation: bool | None = None,
        max_length: int | None = None,
    ) -> list[int]:
        """Token ids of one text: prefix_tokens + pieces + [eos]."""
        _, trunc, max_length = token_strategies(
            False, truncation, max_length, self.model_max_length
        )
        return self._encode_one(text, add_special_tokens, trunc, max_length)

    def __call__(
        self,
        text: str | list[str],
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        padding_side: str | None = None,
    ) -> BatchEncoding:
        """Encode one text (lists of ints) or a batch (lists of lists), as transformers does."""
        pad, trunc, max_length = token_strategies(
            padding, truncation, max_length, self.model_max_length
        )
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        ids = [self._encode_one(t, add_special_tokens, trunc, max_length) for t in texts]
        target = None
        if pad == "longest":
            target = max(len(x) for x in ids)
        elif pad == "max_length":
            target = max_length
        if target is not None:
            target = round_up(target, pad_to_multiple_of)
        side = padding_side or self.padding_side
        ids, masks = pad_id_lists(ids, target, self.pad_token_id, side)
        out = {"input_ids": ids if batched else ids[0]}
        if return_attention_mask is None or return_attention_mask:
            out["attention_mask"] = masks if batched else masks[0]
        if return_tensors is not None and not batched:
            out = {k: [v] for k, v in out.items()}  # transformers adds the batch axis
        return BatchEncoding(out).convert_to_tensors(return_tensors)

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
        """tokenizer_config.json as transformers 5 writes it."""
        return {
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

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        special_tokens_map: bool = False,
        processor_class: str | None = None,
    ) -> tuple[str, ...]:
        """Write vocab.json, sentencepiece.bpe.model and tokenizer_config.json (and, for the
        older hub layout, special_tokens_map.json)."""
        config = self.to_config()
        if processor_class is not None:
            config["processor_class"] = processor_class
        tokens = None
        if special_tokens_map:
            tokens = {name: getattr(self, name) for name in SPECIAL_TOKEN_NAMES}
            if self.extra_special_tokens:
                tokens["additional_special_tokens"] = list(self.extra_special_tokens)
        return write_tokenizer_files(
            save_directory, self.encoder, self.spm_file, self.sp_model, config, tokens
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
