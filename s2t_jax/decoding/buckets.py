"""Padded-length buckets: pad a batch's time axis up to one of a few fixed lengths.

Why: every distinct input shape costs an XLA compilation (seconds for a beam search, more for a
train step). Padding frames up to the smallest bucket that holds them bounds the number of
compilations by the number of buckets, whatever lengths arrive. Padding is masked (the frame
mask comes from `attention_mask`), but Speech2Text's conv subsampler lets padded frames leak
into the last valid outputs (fairseq issue 3078). generate() therefore tells the convs how many
frames it was given (subsampler.conv_extent_variables): they see zeros past them, as
transformers' convs do at the end of the input, so the bucket padding changes nothing.

Nothing here knows about speech: the same helpers pad token batches or batch sizes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Frame counts (10 ms each, so 2.56 s .. 60 s). Dense at the short end, where most utterances are
# and where padding is proportionally most wasteful; every bucket is a multiple of 2**3 so any
# conv subsampling of up to 3 stride-2 layers divides it evenly.
DEFAULT_BUCKETS: tuple[int, ...] = (256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6000)


def bucket_for(length: int, buckets: Sequence[int] | None) -> int:
    """The smallest bucket >= length.

    Past the largest bucket the length is rounded up to a multiple of the largest, which keeps
    the number of shapes bounded for rare very long inputs. `buckets=None` means no bucketing.
    """
    length = int(length)
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if not buckets:
        return length
    ordered = sorted(int(b) for b in buckets)
    if ordered[0] <= 0:
        raise ValueError(f"buckets must be positive, got {list(buckets)}")
    for size in ordered:
        if size >= length:
            return size
    top = ordered[-1]
    return -(-length // top) * top


def pad_axis(x: np.ndarray, size: int, axis: int = 1, value=0) -> np.ndarray:
    """Pads `x` with `value` at the end of `axis` up to `size` (no-op when already that long)."""
    x = np.asarray(x)
    extra = size - x.shape[axis]
    if extra < 0:
        raise ValueError(f"cannot pad axis {axis} of length {x.shape[axis]} down to {size}")
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return np.pad(x, widths, constant_values=value)


def pad_to_bucket(features, mask, buckets: Sequence[int] | None, axis: int = 1):
    """Pads features [batch, frames, ...] and mask [batch, frames] along `axis` to a bucket.

    `mask=None` means every given frame is valid; a mask is made so the padding stays masked.
    Returns (features, mask int32), both numpy.
    """
    features = np.asarray(features)
    length = features.shape[axis]
    if mask is None:
        mask = np.ones(features.shape[: axis + 1], np.int32)  # [batch, frames]
    mask = np.asarray(mask, np.int32)
    if mask.shape[axis] != length:
        raise ValueError(f"mask has {mask.shape[axis]} frames, features have {length}")
    size = bucket_for(length, buckets)
    return pad_axis(features, size, axis), pad_axis(mask, size, axis)
