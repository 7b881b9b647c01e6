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
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import sentencepiece

from s2t_jax.frontend.features import BatchFeature

__all__ = ["BatchEncoding", "Speech2TextTokenizer"]

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "spm_file": "sentencepiece.bpe.model"}
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
MUSTC_LANGS = ["pt", "fr", "ru", "nl", "ro", "it", "es", "de"]
LANGUAGES = {"mustc": MUSTC_LANGS}
VERY_LARGE_INTEGER = int(1e30)  # transformers' "no limit" model_max_length
LARGE_INTEGER = int(1e20)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


class BatchEncoding(BatchFeature):
    """Tokenizer output: `input_ids` and `attention_mask`, with attribute access."""

    def convert_to_tensors(self, tensor_type: str | None = None) -> BatchEncoding:
        if tensor_type is None:
            return self
        tensor_type = str(getattr(tensor_type, "value", tensor_type))
        if tensor_type not in ("np", "jax"):
            raise ValueError(f"return_tensors must be None, 'np' or 'jax', got {tensor_type!r}")
        for key, value in self.items():
            try:
                array = np.asarray(value, dtype=np.int64)
            except ValueError as err:
                raise ValueError(
                    f"Unable to make '{key}' one tensor: sequences have different lengths. "
                    "Use padding=True."
                ) from err
            if tensor_type == "jax":
                import jax.numpy as jnp

                array = jnp.asarray(array)
            self[key] = array
        return self


def _token_content(token) -> str | None:
    """A special token as saved by transformers: a string or an AddedToken dict."""
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict) and "content" in token:
        return token["content"]
    raise TypeError(f"cannot read a special token from {token!r}")


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

        self.bos_token = _token_content(bos_token)
        self.eos_token = _token_content(eos_token)
        self.pad_token = _token_content(pad_token)
        self.unk_token = _token_content(unk_token)
        self.do_upper_case = do_upper_case
        self.do_lower_case = do_lower_case
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else model_max_length
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.padding_side = padding_side

        extra = [_token_content(t) for t in additional_special_tokens or []]
        if isinstance(extra_special_tokens, dict):  # transformers 4.x named extras
            extra += [_token_content(t) for t in extra_special_tokens.values()]
        elif extra_special_tokens:
            extra += [_token_content(t) for t in extra_special_tokens]

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
        self._added: dict[str, int] = {}
        self._added_props: dict[str, dict[str, bool]] = {}
        for index, entry in sorted((added_tokens_decoder or {}).items(), key=lambda kv: int(kv[0])):
            content = _token_content(entry)
            self._added[content] = int(index)
            if isinstance(entry, dict):
                self._added_props[content] = {
                    k: bool(entry.get(k, False)) for k in ("lstrip", "rstrip", "special")
                }
        for token in self.all_special_tokens:
            if token not in self._added:
                self._added[token] = self.encoder.get(token, self._next_id())
        self._added_decoder = {v: k for k, v in self._added.items()}
        self._split_pattern = self._build_split_pattern()
        self.init_kwargs = kwargs

    # ---- vocabulary ---------------------------------------------------------------------

    def _next_id(self) -> int:
        return len(set(self.encoder) | set(self._added))

    def _build_split_pattern(self):
        tokens = sorted(self._added, key=len, reverse=True)
        return re.compile("(" + "|".join(re.escape(t) for t in tokens) + ")") if tokens else None

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def get_vocab(self) -> dict[str, int]:
        return {**self.encoder, **self._added}

    def __len__(self) -> int:
        return len(self.get_vocab())

    @property
    def all_special_ids(self) -> list[int]:
        return [self._added[t] for t in self.all_special_tokens]

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
        pieces = [text] if self._split_pattern is None else self._split_pattern.split(text)
        for i, piece in enumerate(pieces):
            props = self._added_props.get(piece) if i % 2 else None
            if props:
                if props["rstrip"] and i + 1 < len(pieces):
                    pieces[i + 1] = pieces[i + 1].lstrip()
                if props["lstrip"] and i > 0:
                    pieces[i - 1] = pieces[i - 1].rstrip()
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
            if tokens in self._added:
                return self._added[tokens]
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

    def _strategies(self, padding, truncation, max_length):
        """transformers' rules: max_length alone turns truncation on; no limit means none."""
        if max_length is not None and padding is False and truncation is None:
            truncation = True
        value = getattr(padding, "value", padding)
        if value is True or value == "longest":
            pad = "longest"
        elif value == "max_length":
            pad = "max_length"
        elif value in (False, None, "do_not_pad"):
            pad = None
        else:
            raise ValueError(
                f"padding must be True, False, 'longest' or 'max_length', got {padding!r}"
            )
        trunc = getattr(truncation, "value", truncation) not in (None, False, "do_not_truncate")
        if max_length is None:
            if pad == "max_length":
                if self.model_max_length > LARGE_INTEGER:
                    pad = None
                else:
                    max_length = self.model_max_length
            if trunc:
                if self.model_max_length > LARGE_INTEGER:
                    trunc = False
                else:
                    max_length = self.model_max_length
        return pad, trunc, max_length

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
        _, trunc, max_length = self._strategies(False, truncation, max_length)
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
        pad, trunc, max_length = self._strategies(padding, truncation, max_length)
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        ids = [self._encode_one(t, add_special_tokens, trunc, max_length) for t in texts]
        target = None
        if pad == "longest":
            target = max(len(x) for x in ids)
        elif pad == "max_length":
            target = max_length
        if target is not None and pad_to_multiple_of and target % pad_to_multiple_of:
            target = (target // pad_to_multiple_of + 1) * pad_to_multiple_of
        side = padding_side or self.padding_side
        masks = []
        for i, seq in enumerate(ids):
            gap = max(0, target - len(seq)) if target is not None else 0
            pad_ids, ones = [self.pad_token_id] * gap, [1] * len(seq)
            ids[i] = seq + pad_ids if side == "right" else pad_ids + seq
            masks.append(ones + [0] * gap if side == "right" else [0] * gap + ones)
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
            if index in self._added_decoder:
                return self._added_decoder[index]
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
        added = {
            str(index): {
                "content": token,
                "lstrip": self._added_props.get(token, {}).get("lstrip", False),
                "normalized": False,
                "rstrip": self._added_props.get(token, {}).get("rstrip", False),
                "single_word": False,
                "special": token in self.all_special_tokens
                or self._added_props.get(token, {}).get("special", False),
            }
            for index, token in sorted(self._added_decoder.items())
        }
        return {
            "added_tokens_decoder": added,
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
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        vocab_path = save_directory / VOCAB_FILES_NAMES["vocab_file"]
        spm_path = save_directory / VOCAB_FILES_NAMES["spm_file"]
        with open(vocab_path, "w", encoding="utf-8") as f:
            json.dump(self.encoder, f, indent=2)
        if os.path.isfile(self.spm_file):
            if os.path.abspath(self.spm_file) != os.path.abspath(spm_path):
                shutil.copyfile(self.spm_file, spm_path)
        else:
            spm_path.write_bytes(self.sp_model.serialized_model_proto())
        config = self.to_config()
        if processor_class is not None:
            config["processor_class"] = processor_class
        config_path = save_directory / TOKENIZER_CONFIG_FILE
        config_path.write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        written = [str(config_path), str(vocab_path), str(spm_path)]
        if special_tokens_map:
            tokens = {name: getattr(self, name) for name in SPECIAL_TOKEN_NAMES}
            if self.extra_special_tokens:
                tokens["additional_special_tokens"] = list(self.extra_special_tokens)
            map_path = save_directory / SPECIAL_TOKENS_MAP_FILE
            map_path.write_text(
                json.dumps(tokens, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
            written.append(str(map_path))
        return tuple(written)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> Speech2TextTokenizer:
        """Load vocab.json + sentencepiece.bpe.model + tokenizer_config.json (+ special_tokens_map.json)."""
        directory = Path(directory)
        files = {key: directory / name for key, name in VOCAB_FILES_NAMES.items()}
        for path in files.values():
            if not path.is_file():
                raise OSError(f"{directory}: missing tokenizer file {path.name}")
        config: dict[str, Any] = {}
        if (directory / TOKENIZER_CONFIG_FILE).is_file():
            config = json.loads((directory / TOKENIZER_CONFIG_FILE).read_text(encoding="utf-8"))
        if (directory / SPECIAL_TOKENS_MAP_FILE).is_file():
            special = json.loads((directory / SPECIAL_TOKENS_MAP_FILE).read_text(encoding="utf-8"))
            for key, value in special.items():
                config.setdefault(key, value)
        for key in (
            "tokenizer_class",
            "processor_class",
            "name_or_path",
            "special_tokens_map_file",
        ):
            config.pop(key, None)
        config.pop("tokenizer_file", None)
        config.pop("backend", None)
        config.update(kwargs)
        return cls(files["vocab_file"], files["spm_file"], **config)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, lang_codes={self.lang_codes!r}, "
            f"tgt_lang={self.tgt_lang!r}, do_upper_case={self.do_upper_case})"
        )
