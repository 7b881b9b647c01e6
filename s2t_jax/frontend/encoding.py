"""Text -> model inputs with transformers' tokenizer call semantics, over any tokenizer that can
turn text into ids and add its special tokens.

Why apart from the tokenizer: the vocabulary (`tokenizer.py`) and the rules for pairs, targets,
truncation with overflow, padding and tensors are two ideas; this is the second, as transformers'
`PreTrainedTokenizer.__call__` / `encode` / `prepare_for_model` / `pad` define it. The rules it
reproduces:
  * a pair is `prefix + ids + pair_ids + [eos]` (Speech2Text concatenates), with BERT-style
    token_type_ids when asked: 0 for as many positions as the first sequence takes with its
    special tokens, 1 for the rest;
  * `text_target` is encoded the same way and returned as `labels` next to `text`'s inputs;
  * truncation cuts from `truncation_side` (call > tokenizer), with `stride` ids of context
    repeated in `overflowing_tokens`;
  * batches are encoded one by one and then padded together.
Deliberate differences, where transformers fails or silently ignores an argument:
  * `truncation_side` is also a call argument (transformers ignores it there);
  * in a batch, `overflowing_tokens` / `num_truncated_tokens` have a row for every sequence
    (transformers raises an AssertionError unless every sequence overflowed);
  * `pad(..., return_attention_mask=False)` still pads an attention_mask it is given
    (transformers leaves it at its old length);
  * unknown keyword arguments are a TypeError (transformers drops them).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from s2t_jax.frontend.model_inputs import BatchEncoding
from s2t_jax.frontend.padding import (
    check_side,
    pad_encoding,
    padded_length,
    token_strategies,
    truncate_sequences,
)

__all__ = ["EncodingMixin"]


def _is_batch(text) -> bool:
    return isinstance(text, (list, tuple))


def _as_python(value):
    """numpy / jax arrays (or lists of them) -> nested Python lists of ints."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_as_python(v) for v in value]
    return value


class EncodingMixin:
    """transformers' `__call__`, `encode`, `prepare_for_model` and `pad`.

    The class using it provides `tokenize`, `convert_tokens_to_ids`,
    `build_inputs_with_special_tokens`, `get_special_tokens_mask`, `pad_token_id`,
    `padding_side`, `truncation_side`, `model_max_length` and `model_input_names`.
    """

    pad_token_type_id = 0

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return len(self.build_inputs_with_special_tokens([], [] if pair else None))

    @property
    def max_len_single_sentence(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=False)

    @property
    def max_len_sentences_pair(self) -> int:
        return self.model_max_length - self.num_special_tokens_to_add(pair=True)

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """0 for the first sequence with its special tokens, 1 for the rest of a pair."""
        first = len(self.build_inputs_with_special_tokens(list(token_ids_0)))
        if token_ids_1 is None:
            return [0] * first
        total = len(self.build_inputs_with_special_tokens(list(token_ids_0), list(token_ids_1)))
        return [0] * first + [1] * (total - first)

    # ---- one sequence (or pair) of ids --------------------------------------------------

    def _text_ids(self, text) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(
                f"text must be a string or a list of strings, got {type(text).__name__}"
            )
        return self.convert_tokens_to_ids(self.tokenize(text))

    def _prepare(
        self,
        ids: list[int],
        pair_ids: list[int] | None,
        add_special_tokens: bool,
        pad: str | None,
        trunc: str | None,
        max_length: int | None,
        stride: int,
        pad_to_multiple_of: int | None,
        padding_side: str | None,
        truncation_side: str | None,
        return_token_type_ids: bool | None,
        return_attention_mask: bool | None,
        return_overflowing_tokens: bool,
        return_special_tokens_mask: bool,
        return_length: bool,
        keep_overflow: bool,
    ) -> dict:
        """Truncate, add special tokens and pad one sequence (or pair), by resolved strategies."""
        if return_overflowing_tokens and trunc == "longest_first" and pair_ids is not None:
            raise ValueError(
                "Not possible to return overflowing tokens for pair of sequences with the "
                "`longest_first`. Please select another truncation strategy than `longest_first`, "
                "for instance `only_second` or `only_first`."
            )
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        ids = list(ids)
        pair_ids = None if pair_ids is None else list(pair_ids)
        specials = self.num_special_tokens_to_add(pair_ids is not None) if add_special_tokens else 0
        total = len(ids) + len(pair_ids or []) + specials
        overflow = []
        if trunc is not None and max_length and total > max_length:
            side = truncation_side or self.truncation_side
            ids, pair_ids, overflow = truncate_sequences(
                ids, pair_ids, total - max_length, trunc, stride, side
            )
        if add_special_tokens:
            sequence = self.build_inputs_with_special_tokens(ids, pair_ids)
            type_ids = self.create_token_type_ids_from_sequences(ids, pair_ids)
        else:
            sequence = ids + (pair_ids or [])
            type_ids = [0] * len(sequence)
        out = {"input_ids": sequence}
        if return_token_type_ids:
            out["token_type_ids"] = type_ids
        if return_special_tokens_mask:
            out["special_tokens_mask"] = (
                self.get_special_tokens_mask(ids, pair_ids)
                if add_special_tokens
                else [0] * len(sequence)
            )
        if return_overflowing_tokens and keep_overflow and overflow:
            out["overflowing_tokens"] = overflow
            out["num_truncated_tokens"] = total - max_length if max_length else 0
        out = pad_encoding(
            out,
            padded_length(pad, [len(sequence)], max_length, pad_to_multiple_of),
            self.pad_token_id,
            padding_side or self.padding_side,
            return_attention_mask,
        )
        if return_length:
            out["length"] = len(out["input_ids"])
        return out

    def prepare_for_model(
        self,
        ids: list[int],
        pair_ids: list[int] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        truncation_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        prepend_batch_axis: bool = False,
    ) -> BatchEncoding:
        """Ids (and pair ids) from `convert_tokens_to_ids` -> model inputs: truncated, with
        special tokens, padded."""
        check_side("padding_side", padding_side)
        check_side("truncation_side", truncation_side)
        pad, trunc, max_length = token_strategies(
            padding, truncation, max_length, self.model_max_length, pad_to_multiple_of
        )
        out = self._prepare(
            _as_python(ids),
            None if pair_ids is None else _as_python(pair_ids),
            add_special_tokens,
            pad,
            trunc,
            max_length,
            stride,
            pad_to_multiple_of,
            padding_side,
            truncation_side,
            return_token_type_ids,
            return_attention_mask,
            return_overflowing_tokens,
            return_special_tokens_mask,
            return_length,
            keep_overflow=return_tensors is None,
        )
        if return_tensors is not None:
            out.pop("overflowing_tokens", None)
            out.pop("num_truncated_tokens", None)
        return BatchEncoding(out, return_tensors, prepend_batch_axis)

    # ---- text ---------------------------------------------------------------------------

    def _encode_text(self, text, text_pair, options: dict) -> BatchEncoding:
        """One text or a batch (a list; items may be (text, pair) tuples) -> BatchEncoding."""
        return_tensors = options.pop("return_tensors")
        if not _is_batch(text):
            first = self._text_ids(text)
            second = None if text_pair is None else self._text_ids(text_pair)
            out = self._prepare(first, second, **options, keep_overflow=return_tensors is None)
            return BatchEncoding(out, return_tensors, prepend_batch_axis=True)
        if text_pair is not None and (not _is_batch(text_pair) or len(text_pair) != len(text)):
            raise ValueError(
                "If `text` is a batch, `text_pair` must also be a batch of the same length."
            )
        pairs = list(text_pair) if text_pair is not None else [None] * len(text)
        rows = []
        for item, pair in zip(text, pairs):
            if _is_batch(item) and pair is None:
                if len(item) == 2:
                    item, pair = item
                elif len(item) == 1:
                    item = item[0]
                else:
                    raise ValueError(f"Expected a pair of sequences, got {len(item)} sequences.")
            first = self._text_ids(item)
            second = None if pair is None else self._text_ids(pair)
            unpadded = {**options, "pad": None, "return_attention_mask": False}
            keep = return_tensors is None
            rows.append(self._prepare(first, second, **unpadded, keep_overflow=keep))
        if any("overflowing_tokens" in row for row in rows):
            for row in rows:  # a row for every sequence, even those that did not overflow
                row.setdefault("overflowing_tokens", [])
                row.setdefault("num_truncated_tokens", 0)
        batch = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
        return self.pad(
            batch,
            padding=options["pad"] or False,
            max_length=options["max_length"],
            pad_to_multiple_of=options["pad_to_multiple_of"],
            padding_side=options["padding_side"],
            return_attention_mask=options["return_attention_mask"],
            return_tensors=return_tensors,
        )

    def __call__(
        self,
        text: str | list[str] | None = None,
        text_pair: str | list[str] | None = None,
        text_target: str | list[str] | None = None,
        text_pair_target: str | list[str] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        truncation_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_length: bool = False,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Encode one text (lists of ints) or a batch (lists of lists), optionally with pairs
        and targets (`labels`), as transformers does."""
        if text is None and text_target is None:
            raise ValueError("You need to specify either `text` or `text_target`.")
        check_side("padding_side", padding_side)
        check_side("truncation_side", truncation_side)
        pad, trunc, max_length = token_strategies(
            padding, truncation, max_length, self.model_max_length, pad_to_multiple_of
        )
        options = dict(
            add_special_tokens=add_special_tokens,
            pad=pad,
            trunc=trunc,
            max_length=max_length,
            stride=stride,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            truncation_side=truncation_side,
            return_token_type_ids=return_token_type_ids,
            return_attention_mask=return_attention_mask,
            return_overflowing_tokens=return_overflowing_tokens,
            return_special_tokens_mask=return_special_tokens_mask,
            return_length=return_length,
        )
        encodings = targets = None
        if text is not None:
            encodings = self._encode_text(
                text, text_pair, {**options, "return_tensors": return_tensors}
            )
        if text_target is not None:
            targets = self._encode_text(
                text_target, text_pair_target, {**options, "return_tensors": return_tensors}
            )
        if targets is None:
            return encodings
        if encodings is None:
            return targets
        encodings["labels"] = targets["input_ids"]
        return encodings

    def encode(
        self,
        text: str | list[str],
        text_pair: str | list[str] | None = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        truncation_side: str | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> list[int]:
        """Token ids of one text (or pair): prefix_tokens + pieces + [eos], truncated/padded."""
        return self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            truncation_side=truncation_side,
            return_tensors=return_tensors,
            return_attention_mask=False,
        )["input_ids"]

    # ---- padding encodings --------------------------------------------------------------

    def pad(
        self,
        encoded_inputs,
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Pad one encoding or a batch (a dict of lists, or a list of dicts as a collate_fn
        gets) to the longest or to max_length. numpy inputs give numpy outputs unless
        return_tensors says otherwise."""
        check_side("padding_side", padding_side)
        if _is_batch(encoded_inputs) and encoded_inputs and isinstance(encoded_inputs[0], Mapping):
            encoded_inputs = {
                key: [row[key] for row in encoded_inputs] for key in encoded_inputs[0].keys()
            }
        encoded_inputs = dict(encoded_inputs)
        main = self.model_input_names[0]
        if main not in encoded_inputs:
            raise ValueError(
                "You should supply an encoding or a list of encodings to this method "
                f"that includes {main}, but you provided {list(encoded_inputs)}"
            )
        if encoded_inputs[main] is None or len(encoded_inputs[main]) == 0:
            if return_attention_mask:
                encoded_inputs["attention_mask"] = []
            return BatchEncoding(encoded_inputs)
        if return_tensors is None and any(
            isinstance(v, np.ndarray) or (_is_batch(v) and v and isinstance(v[0], np.ndarray))
            for v in encoded_inputs.values()
        ):
            return_tensors = "np"
        encoded_inputs = {key: _as_python(value) for key, value in encoded_inputs.items()}
        pad, _, max_length = token_strategies(padding, False, max_length, self.model_max_length)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        side = padding_side or self.padding_side
        required = encoded_inputs[main]
        if not _is_batch(required[0]):  # one encoding
            target = padded_length(pad, [len(required)], max_length, pad_to_multiple_of)
            out = pad_encoding(
                encoded_inputs, target, self.pad_token_id, side, return_attention_mask
            )
            return BatchEncoding(out, return_tensors)
        sizes = {len(v) for v in encoded_inputs.values()}
        if len(sizes) > 1:
            raise ValueError(
                "Some items in the output dictionary have a different batch size than others."
            )
        target = padded_length(pad, [len(ids) for ids in required], max_length, pad_to_multiple_of)
        rows = [
            pad_encoding(
                {key: value[i] for key, value in encoded_inputs.items()},
                target,
                self.pad_token_id,
                side,
                return_attention_mask,
            )
            for i in range(len(required))
        ]
        batch = {key: [row[key] for row in rows] for key in rows[0]}
        return BatchEncoding(batch, return_tensors)
