"""transformers' padding and truncation rules, read one way by the extractor and tokenizer.

`padding` is True / "longest", "max_length", or False / None / "do_not_pad" (or transformers'
`PaddingStrategy` enum, by its value); `pad_to_multiple_of` rounds the padded length up.
`truncation` is True / "longest_first", "only_first", "only_second", or False / None /
"do_not_truncate". The tokenizer adds transformers' rules for a missing `max_length`, for cutting
one sequence or a pair from either side with a `stride` of overflow, and for padding every
per-token list of an encoding (ids, attention mask, token types, special-tokens mask).
"""

from __future__ import annotations

__all__ = [
    "check_side",
    "pad_encoding",
    "padded_length",
    "padding_strategy",
    "round_up",
    "token_strategies",
    "truncate_sequences",
    "truncation_strategy",
]

LARGE_INTEGER = int(1e20)  # a model_max_length above this means "no limit"
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
SIDES = ("right", "left")


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


def truncation_strategy(truncation) -> str | None:
    """-> "longest_first", "only_first", "only_second", or None for no truncation."""
    value = getattr(truncation, "value", truncation)
    if value is False or value is None or value == "do_not_truncate":
        return None
    if value is True:
        return "longest_first"
    if value in TRUNCATION_STRATEGIES:
        return value
    raise ValueError(
        "truncation must be True, False, 'longest_first', 'only_first', 'only_second' or "
        f"'do_not_truncate', got {truncation!r}"
    )


def check_side(name: str, side: str | None) -> str | None:
    """`side` unchanged when None, "right" or "left"; else a ValueError naming the argument."""
    if side is not None and side not in SIDES:
        raise ValueError(f"{name} must be 'right' or 'left', got {side!r}")
    return side


def token_strategies(
    padding,
    truncation,
    max_length: int | None,
    model_max_length: int,
    pad_to_multiple_of: int | None = None,
) -> tuple[str | None, str | None, int | None]:
    """The tokenizer's (padding strategy, truncation strategy, max_length), by transformers'
    rules: max_length alone turns truncation on; without max_length, "max_length" padding and
    truncation use model_max_length, or are off when the model has no limit; truncating and
    padding together need a max_length that is a multiple of pad_to_multiple_of."""
    if max_length is not None and padding is False and truncation is None:
        truncation = True
    pad = padding_strategy(padding)
    trunc = truncation_strategy(truncation)
    if max_length is None:
        if pad == "max_length":
            if model_max_length > LARGE_INTEGER:
                pad = None
            else:
                max_length = model_max_length
        if trunc is not None:
            if model_max_length > LARGE_INTEGER:
                trunc = None
            else:
                max_length = model_max_length
    if (
        trunc is not None
        and pad is not None
        and pad_to_multiple_of is not None
        and max_length is not None
        and max_length % pad_to_multiple_of != 0
    ):
        raise ValueError(
            "Truncation and padding are both activated but truncation length "
            f"({max_length}) is not a multiple of pad_to_multiple_of ({pad_to_multiple_of})."
        )
    return pad, trunc, max_length


def round_up(n: int, multiple: int | None) -> int:
    """`n` rounded up to a multiple of `multiple` (unchanged when that is None or 0)."""
    if not multiple or n % multiple == 0:
        return n
    return (n // multiple + 1) * multiple


def padded_length(
    strategy: str | None, lengths: list[int], max_length: int | None, multiple: int | None
) -> int | None:
    """The length to pad to: the longest of `lengths` or max_length, rounded up to `multiple`;
    None for no padding."""
    if strategy is None:
        return None
    target = max(lengths) if strategy == "longest" else max_length
    return round_up(target, multiple)


def _cut(ids: list[int], n: int, stride: int, side: str) -> tuple[list[int], list[int]]:
    """Remove `n` ids from `side` -> (kept, overflow); overflow also repeats `stride` kept ids."""
    window = min(len(ids), stride + n)
    if side == "left":
        return ids[n:], ids[:window]
    return ids[:-n], ids[-window:]


def truncate_sequences(
    ids: list[int],
    pair_ids: list[int] | None,
    num_tokens_to_remove: int,
    strategy: str,
    stride: int = 0,
    side: str = "right",
) -> tuple[list[int], list[int] | None, list[int]]:
    """Cut `num_tokens_to_remove` ids as transformers does -> (ids, pair_ids, overflowing).

    "longest_first" on a pair takes from the longer sequence first, then alternately, and
    returns no overflow; "only_first" / "only_second" cut one sequence (possibly to nothing)."""
    if num_tokens_to_remove <= 0:
        return ids, pair_ids, []
    if strategy == "only_first" or (strategy == "longest_first" and pair_ids is None):
        ids, overflow = _cut(ids, num_tokens_to_remove, stride, side)
        return ids, pair_ids, overflow
    if strategy == "only_second":
        if not pair_ids:
            return ids, pair_ids, []
        pair_ids, overflow = _cut(pair_ids, num_tokens_to_remove, stride, side)
        return ids, pair_ids, overflow
    # longest_first on a pair
    n_first, n_pair = len(ids), len(pair_ids)
    first = min(abs(n_pair - n_first), num_tokens_to_remove)
    rest = num_tokens_to_remove - first
    if n_first > n_pair:
        from_ids, from_pair = first + rest // 2, rest - rest // 2
    else:
        from_ids, from_pair = rest // 2, first + rest - rest // 2
    if side == "right":
        ids = ids[:-from_ids] if from_ids > 0 else ids
        pair_ids = pair_ids[:-from_pair] if pair_ids and from_pair > 0 else pair_ids
    else:
        ids, pair_ids = ids[from_ids:], pair_ids[from_pair:]
    return ids, pair_ids, []


# What each per-token key of an encoding is padded with (input_ids take the pad id).
PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}


def pad_encoding(
    encoding: dict[str, list[int]],
    target: int | None,
    pad_id: int,
    side: str = "right",
    return_attention_mask: bool = True,
) -> dict[str, list[int]]:
    """One encoding padded to `target` tokens on `side` (None: not padded); adds the attention
    mask when asked. Keys other than input_ids and those in PAD_VALUES are left as they are."""
    out = dict(encoding)
    ids = list(out["input_ids"])
    if return_attention_mask and "attention_mask" not in out:
        out["attention_mask"] = [1] * len(ids)
    gap = max(0, target - len(ids)) if target is not None else 0
    if gap == 0:
        return out
    fills = {"input_ids": pad_id, **PAD_VALUES}
    for key, fill in fills.items():
        if key in out:
            pads = [fill] * gap
            values = list(out[key])
            out[key] = values + pads if side == "right" else pads + values
    return out
