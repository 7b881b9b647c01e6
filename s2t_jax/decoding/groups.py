"""Length groups: encoding, or searching, the rows of a mixed batch at their own lengths.

A padded batch of mixed lengths spends most of its encoder work, and at larger batches most of
a decoding step's memory traffic, on padding. generate() splits it into groups of similar
length: each group is encoded at its own bucket (the search then runs on the reassembled
states) or, when every group is large enough, searched on its own. The ids do not change.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from s2t_jax.decoding.buckets import bucket_for, pad_axis
from s2t_jax.decoding.placement import mesh_size, on_mesh, round_up
from s2t_jax.decoding.processors import options_for_rows
from s2t_jax.decoding.search import encoder_for, search_for, select_returned
from s2t_jax.models.subsampler import subsampled_lengths


def receptive_margin(config) -> int:
    """Frames past an utterance's end that its valid encoder states can see.

    Each stride-2 conv with kernel k maps output frame i to inputs 2i - k//2 .. 2i + k//2, so
    the last valid state of n layers reaches sum_j 2**(j-1) * (k_j // 2) frames past the end
    (6 for the released 5, 5 kernels). Attention masks everything further; so encoding an
    utterance padded to at least length + margin gives the states it gets in any longer batch.
    """
    return sum(2**j * (k // 2) for j, k in enumerate(config.conv_kernel_sizes))


def _pow2(n) -> int:
    """The smallest power of two >= n (n >= 1): group batch sizes, so compiles stay bounded."""
    return 1 << (int(n) - 1).bit_length()


def _group_inputs(features, mask, rows, frames: int, shards: int = 1):
    """A group's features and mask: its rows, cut to its frames, padded to a power of two
    (and to a multiple of `shards`, the devices it is split over)."""
    size = round_up(_pow2(len(rows)), shards)
    return (
        pad_axis(features[rows, :frames], size, axis=0),
        pad_axis(mask[rows, :frames], size, axis=0),
    )


def _row_order(groups):
    """Index that puts the concatenation of the groups' rows back in the batch's row order."""
    return np.argsort(np.concatenate([rows for rows, _ in groups]))


def length_groups(lengths, frames: int, buckets, config, overhead: int = 64):
    """Splits a padded batch into groups of similar length, each encoded at its own bucket.

    lengths [batch] valid frames; frames: the batch's padded length (itself a bucket). Returns
    [(rows, group_frames), ...], or None when one group (the plain padded batch) is cheapest.
    A group's rows are padded up to a power of two (bounding encoder compiles to
    len(buckets) x log2(batch) shapes), so the cost of a group is padded rows x frames, plus
    `overhead` frames per call. The split is the cheapest partition of the rows sorted by
    length into runs (a small dynamic program over the distinct buckets).
    """
    if not buckets:
        return None
    lengths = np.asarray(lengths)
    need = np.minimum(lengths + receptive_margin(config), frames)
    sizes = np.asarray([min(bucket_for(n, buckets), frames) for n in need])
    order = np.argsort(sizes, kind="stable")
    distinct = sorted(set(sizes.tolist()))
    upto = np.cumsum([int((sizes == b).sum()) for b in distinct])  # rows with bucket <= b

    # best[j]: cheapest cost of the rows in the first j distinct buckets, with its cut points.
    best = [(0, [])] + [None] * len(distinct)
    for j in range(1, len(distinct) + 1):
        for i in range(j):
            rows = upto[j - 1] - (upto[i - 1] if i else 0)
            cost = best[i][0] + _pow2(rows) * distinct[j - 1] + overhead
            if best[j] is None or cost < best[j][0]:
                best[j] = (cost, best[i][1] + [j])
    cuts = best[-1][1]
    if len(cuts) == 1:
        return None
    groups, start = [], 0
    for j in cuts:
        stop = int(upto[j - 1])
        groups.append((order[start:stop], int(distinct[j - 1])))
        start = stop
    return groups


# A batch is split into separate searches only when every part keeps at least this many rows:
# a search step costs a fixed ~100 small ops however few rows it has, so small parts would
# spend more on steps than they save in memory traffic.
MIN_SEARCH_GROUP_ROWS = 8
# Frames x rows one more search costs, in the cost model of `length_groups`.
SEARCH_GROUP_OVERHEAD = 4096


def search_groups(lengths, frames: int, buckets, config):
    """Length groups for running separate searches, or None (see MIN_SEARCH_GROUP_ROWS).

    Why: a decoding step reads every layer's cross-attention K/V for all source positions of
    all rows; at larger batches that memory traffic is most of a step. A group of short
    utterances searched on its own reads only its own length, and stops when its own rows
    are done instead of when the batch's longest output is.
    """
    groups = length_groups(lengths, frames, buckets, config, overhead=SEARCH_GROUP_OVERHEAD)
    if groups is None or min(len(rows) for rows, _ in groups) < MIN_SEARCH_GROUP_ROWS:
        return None
    return groups


def search_in_groups(config, params, features, mask, groups, settings, options, mesh=None):
    """One search per length group -> (ids, scores, lengths) for the returned sequences of
    every row, in the batch's row order, as select_returned gives them for one search.
    options: the batch's SearchOptions (per-row values are split by group)."""
    run = search_for(config, settings.static(), mesh=mesh)
    per_row = settings.num_return_sequences
    parts = []
    for rows, frames in groups:
        f, m = _group_inputs(features, mask, rows, frames, mesh_size(mesh))
        opts = options_for_rows(options, rows, f.shape[0])
        out = [np.asarray(x) for x in run(*on_mesh(mesh, params, f, m), opts)[:3]]
        returned = select_returned(*out, settings.num_beams, per_row)
        parts.append([x[: len(rows) * per_row] for x in returned])  # padding rows dropped
    # Each group gives [its rows * per_row, ...], a row's sequences together: move whole rows.
    flat = (_row_order(groups)[:, None] * per_row + np.arange(per_row)).reshape(-1)
    return tuple(np.concatenate(part)[flat] for part in zip(*parts))


def encode_in_groups(config, params, features, mask, groups, conv_frames, mesh=None):
    """Encodes each group at its own length -> enc [batch, src, d], enc_mask [batch, src] in
    the batch's row order, padded to the batch's full subsampled length (so the search
    compiles once per padded input shape, grouped or not). conv_frames: the frames the caller
    gave (the convs see zeros past them; see SearchOptions)."""
    encode = encoder_for(config, mesh)
    src = int(subsampled_lengths(np.int64(features.shape[1]), config.num_conv_layers))
    parts, masks = [], []
    for rows, frames in groups:
        group = _group_inputs(features, mask, rows, frames, mesh_size(mesh))
        enc, enc_mask = encode(*on_mesh(mesh, params, *group), np.int32(conv_frames))
        pad = src - enc.shape[1]
        parts.append(jnp.pad(enc[: len(rows)], ((0, 0), (0, pad), (0, 0))))
        masks.append(jnp.pad(enc_mask[: len(rows)], ((0, 0), (0, pad))))
    order = _row_order(groups)
    return jnp.concatenate(parts)[order], jnp.concatenate(masks)[order]
