"""Static shapes for the input: frame buckets, their batch sizes, and the plan of every epoch.

Why this shape: XLA compiles once per input shape, so batches come in a fixed list of buckets.
Each bucket pads frames to its length, pads targets to a per-bucket length (the longest target
that falls in it, rounded up to 8), and has its own batch size with batch x frames <= max_tokens
(fairseq's meaning of --max-tokens: padded input frames). One compile per bucket, whatever the
data.

`BatchPlan` is the list of batches of every epoch, a pure function of (seed, epoch): per bucket
the utterances are shuffled and cut into batches (the last one padded with empty rows), then
all batches of the epoch are shuffled. It is a Grain random-access data source whose records
are batch descriptors, so Grain's worker processes can load any batch.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from s2t_jax.data.split import Split


@dataclasses.dataclass(frozen=True)
class Bucket:
    frames: int  # padded input frames
    batch_size: int  # global rows per batch
    target_len: int  # padded target tokens


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def assign_buckets(n_frames: np.ndarray, frame_buckets) -> np.ndarray:
    """[N] frames -> [N] index of the smallest bucket that holds them (all must fit)."""
    edges = np.asarray(sorted(frame_buckets))
    which = np.searchsorted(edges, n_frames, side="left")
    if (which >= len(edges)).any():
        raise ValueError(f"utterances longer than the largest bucket {edges[-1]}")
    return which


def make_buckets(
    split: Split,
    frame_buckets,
    max_tokens: int,
    num_shards: int = 1,
    max_sentences: int | None = None,
) -> tuple[list[Bucket], np.ndarray]:
    """-> (buckets, bucket index per utterance); unused buckets are dropped.

    Batch size: floor(max_tokens / frames), capped by max_sentences, rounded down to a multiple
    of `num_shards` (the data-parallel devices) and at least `num_shards`.
    """
    frame_buckets = sorted(int(b) for b in frame_buckets)
    which = assign_buckets(split.n_frames, frame_buckets)
    lengths = split.target_lengths
    buckets, remap = [], np.full(len(frame_buckets), -1)
    for b, frames in enumerate(frame_buckets):
        members = which == b
        if not members.any():
            continue
        size = max_tokens // frames
        if max_sentences:
            size = min(size, max_sentences)
        size = max(num_shards, size // num_shards * num_shards)
        target_len = _round_up(int(lengths[members].max()), 8)
        remap[b] = len(buckets)
        buckets.append(Bucket(frames=frames, batch_size=size, target_len=target_len))
    return buckets, remap[which]


class BatchPlan:
    """Grain data source: record k is batch k of the run, as (bucket, utterance indices).

    Epoch e holds `batches_per_epoch` batches; its order depends only on (seed, e), so the same
    run always sees the same batches, with any number of workers, before and after a restart.
    """

    def __init__(
        self,
        bucket_of: np.ndarray,
        buckets: list[Bucket],
        seed: int,
        shuffle: bool,
        num_epochs: int = 1,
        start: int = 0,
        name: str = "plan",
    ):
        self.bucket_of = np.asarray(bucket_of)
        self.buckets = list(buckets)
        self.seed, self.shuffle, self.num_epochs, self.start = seed, shuffle, num_epochs, start
        self.name = name
        self._cached = None
        counts = np.bincount(self.bucket_of, minlength=len(self.buckets))
        self.batches_per_epoch = int(
            sum(math.ceil(c / b.batch_size) for c, b in zip(counts, self.buckets))
        )

    def __len__(self) -> int:
        return max(self.batches_per_epoch * self.num_epochs - self.start, 0)

    def __repr__(self) -> str:  # Grain compares reprs; keep them stable across processes
        return (
            f"BatchPlan({self.name}, n={len(self.bucket_of)}, seed={self.seed}, "
            f"shuffle={self.shuffle}, epochs={self.num_epochs}, start={self.start})"
        )

    def from_batch(self, start: int) -> BatchPlan:
        return BatchPlan(
            self.bucket_of, self.buckets, self.seed, self.shuffle, self.num_epochs, start, self.name
        )

    def epoch(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """The batches of one epoch, in order (cached: consecutive records share an epoch)."""
        if self._cached is not None and self._cached[0] == epoch:
            return self._cached[1]
        rng = np.random.default_rng([self.seed, epoch])
        batches = []
        for b, bucket in enumerate(self.buckets):
            members = np.flatnonzero(self.bucket_of == b)
            if self.shuffle:
                members = rng.permutation(members)
            for s in range(0, len(members), bucket.batch_size):
                rows = np.full(bucket.batch_size, -1, np.int64)
                chunk = members[s : s + bucket.batch_size]
                rows[: len(chunk)] = chunk
                batches.append((b, rows))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cached = (epoch, batches)
        return batches

    def __getitem__(self, k: int):
        epoch, j = divmod(self.start + int(k), self.batches_per_epoch)
        bucket, rows = self.epoch(epoch)[j]
        return {"bucket": bucket, "rows": rows, "epoch": epoch}
