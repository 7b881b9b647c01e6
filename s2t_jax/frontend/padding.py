"""transformers' padding and truncation arguments, read one way by the extractor and tokenizer.

`padding` is True / "longest", "max_length", or False / None / "do_not_pad" (or transformers'
`PaddingStrategy` enum, by its value); `pad_to_multiple_of` rounds the padded length up. The
tokenizer adds transformers' rules for `truncation` and a missing `max_length`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["pad_id_lists", "padding_strategy", "round_up", "token_strategies"]

LARGE_INTEGER = int(1e20)  # a model_max_length above this means "no limit"


def padding_strategy(padding) -> str | None:
    """-> "longest", "max_length", or None for no padding. Raises ValueError for anything else."""
    value = getattr(padding, "value", padding)
    if value is False or value is None or value == "do_not_pad":
        return None
    if value is True or value == "longest":
        return "longest"
    if value == "max_length":
        return "max_length"
    raise ValueError(
        f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}"
    )


def token_strategies(
    padding, truncation, max_length: int | None, model_max_length: int
) -> tuple[str | None, bool, int | None]:
    """The tokenizer's (padding strategy, truncate?, max_length), by transformers' rules:
    max_length alone turns truncation on; without max_length, "max_length" padding and
    truncation use model_max_length, or are off when the model has no limit."""
    if max_length is not None and padding is False and truncation is None:
        truncation = True
    pad = padding_strategy(padding)
    trunc = getattr(truncation, "value", truncation) not in (None, False, "do_not_truncate")
    if max_length is None:
        if pad == "max_length":
            if model_max_length > LARGE_INTEGER:
                pad = None
            else:
                max_length = model_max_length
        if trunc:
            if model_max_length > LARGE_INTEGER:
                trunc = False
            else:
                max_length = model_max_length
    return pad, trunc, max_length


def round_up(n: int, multiple: int | None) -> int:
    """`n` rounded up to a multiple of `multiple` (unchanged when that is None or 0)."""
    if not multiple or n % multiple == 0:
        return n
    return (n // multiple + 1) * multiple


def pad_id_lists(
    sequences: Sequence[list[int]], target: int | None, pad_id: int, side: str = "right"
) -> tuple[list[list[int]], list[list[int]]]:
    """Token id lists padded to `target` on `side` (None: as they are) -> (ids, 0/1 masks)."""
    ids, masks = [], []
    for seq in sequences:
        gap = max(0, target - len(seq)) if target is not None else 0
        pads, ones = [pad_id] * gap, [1] * len(seq)
        ids.append(seq + pads if side == "right" else pads + seq)
        masks.append(ones + [0] * gap if side == "right" else [0] * gap + ones)
    return ids, masks
