"""A run's global batches: planned alike on every process, loaded per process, decoded by all.

* Batches are cut from the utterances sorted by length and padded up to `buckets`, so the
  number of compilations is bounded by the buckets used, whatever the lengths.
* Every batch is global: its rows are sharded over a ("data",) mesh of all devices, and each
  process loads only its devices' rows. The last batch is filled with dummy rows that are
  dropped, so each utterance is counted exactly once.
* A file that cannot be read becomes a bad row with its reason; the run goes on. Reasons
  travel between processes as fixed-width utf-8, beside each row's status and seconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from s2t_jax.decoding.buckets import bucket_for
from s2t_jax.decoding.sharded import ShardedGenerator
from s2t_jax.evaluation.items import Item
from s2t_jax.evaluation.sources import Frontend
from s2t_jax.parallel.hosts import gather_rows

REASON_BYTES = 240  # skip reasons travel between processes as fixed-width utf-8
OK, BAD, DUMMY = 0, 1, 2  # row status within a batch


def plan_batches(items: Sequence[Item], todo: Sequence[int], forced: dict, batch_size: int):
    """[(forced BOS int32 [batch_size], [item index or -1] * batch_size)]: longest first, the
    last batch filled with -1 (dummy rows, forced BOS -1).

    Target languages mix within a batch: the forced first token is a per-row input of the
    search, so grouping by language would only add part-filled batches (one per language)."""
    order = sorted(todo, key=lambda i: (-items[i].n_frames, i))
    batches = []
    for first in range(0, len(order), batch_size):
        rows = order[first : first + batch_size]
        rows = rows + [-1] * (batch_size - len(rows))
        bos = [-1 if i < 0 or forced.get(i) is None else forced[i] for i in rows]
        batches.append((np.asarray(bos, np.int32), rows))
    return batches


def load_rows(frontend: Frontend, items, rows, max_frames: int):
    """This process's rows of a batch -> [(features or None, seconds, reason)]."""
    out = []
    for i in rows:
        if i < 0:
            out.append((None, 0.0, ""))
            continue
        try:
            x, seconds = frontend.load(items[i].audio)
        except (OSError, ValueError) as e:  # AudioError and ManifestError are ValueErrors
            out.append((None, 0.0, str(e) or type(e).__name__))
            continue
        if len(x) > max_frames:
            reason = f"too long for the encoder: {len(x)} frames > {max_frames}"
            out.append((None, seconds, reason))
            continue
        out.append((x, seconds, ""))
    return out


def _encode_reason(text: str) -> np.ndarray:
    raw = text.encode("utf-8")[:REASON_BYTES]
    return np.frombuffer(raw.ljust(REASON_BYTES, b"\0"), np.uint8)


def decode_reason(raw: np.ndarray) -> str:
    return bytes(raw).rstrip(b"\0").decode("utf-8", errors="replace")


def decode_batch(generator: ShardedGenerator, loaded_rows, num_mel_bins: int, buckets, bos):
    """This process's loaded rows and their forced BOS ([local rows] int32, -1 = none) ->
    (ids, status, seconds, reasons) of the whole global batch.

    Every process pads to the same bucket: the largest over processes (one small all-gather),
    so the global batch has one shape. Bad and dummy rows carry one zero frame, which keeps
    their (discarded) attention finite.
    """
    longest = max((len(x) for x, _, _ in loaded_rows if x is not None), default=1)
    longest = int(gather_rows(np.asarray([longest], np.int64)).max())
    frames = bucket_for(longest, buckets)
    n = len(loaded_rows)
    features = np.zeros((n, frames, num_mel_bins), np.float32)  # [local rows, frames, F]
    mask = np.zeros((n, frames), np.int32)  # [local rows, frames]
    status = np.full((n,), OK, np.int32)
    seconds = np.zeros((n,), np.float64)
    reasons = np.zeros((n, REASON_BYTES), np.uint8)
    for r, (x, secs, reason) in enumerate(loaded_rows):
        seconds[r] = secs
        if x is None:
            status[r] = BAD if reason else DUMMY
            reasons[r] = _encode_reason(reason)
            mask[r, 0] = 1
            continue
        features[r, : len(x)] = x
        mask[r, : len(x)] = 1
    ids = generator(features, mask, bos)  # [global rows, max_length]
    status, seconds, reasons = gather_rows((status, seconds, reasons))
    return ids, status, seconds, reasons
