"""The training/eval input pipeline: manifests -> padded, bucketed, static-shape batches.

Why this shape: XLA compiles once per input shape, so batches come in a fixed list of buckets.
Each bucket pads frames to its length, pads targets to a per-bucket length (the longest target
that falls in it, rounded up to 8), and has its own batch size with batch x frames <= max_tokens
(fairseq's meaning of --max-tokens: padded input frames). One compile per bucket, whatever the
data.

Pieces:
  * `load_split` reads manifests, tokenises targets once, and skips (counting why) utterances
    with empty text, too many frames, or too many target tokens.
  * `BatchPlan` is the list of batches of every epoch, a pure function of (seed, epoch): per
    bucket the utterances are shuffled and cut into batches (the last one padded with empty
    rows), then all batches of the epoch are shuffled. It is a Grain random-access data source
    whose records are batch descriptors, so Grain's worker processes can load any batch.
  * `LoadBatch` (a Grain Map run in the workers) reads features (.npy, zip member, or a sound
    file through Kaldi fbank), applies CMVN, pads, and builds teacher-forcing inputs.
  * `Loader` wraps grain.DataLoader. Its state is the number of batches handed out: resuming
    rebuilds the loader from that batch on, valid for any number of workers (Grain's own state
    is tied to the worker count).

Batches are dicts of numpy arrays: features f32 [B, T, F], attention_mask i32 [B, T],
prev_tokens / target i32 [B, L] (pad = 1), index i32 [B] (row in the split, -1 for padding
rows), bad i32 [B] (1 where the audio could not be read and the row was emptied).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os

import grain
import numpy as np

from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.manifest import load_features_or_waveform, read_manifest
from s2t_jax.data.vocab import EOS, PAD, TargetEncoder

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Utterances of a split
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Split:
    """The utterances kept from one or more manifests, with their encoded targets."""

    name: str
    ids: list[str]
    audio: list[str]
    n_frames: np.ndarray  # int64 [N]
    target_offsets: np.ndarray  # int64 [N + 1] into target_flat
    target_flat: np.ndarray  # int32 [sum of target lengths], eos included
    skipped: dict[str, int]

    def __len__(self) -> int:
        return len(self.ids)

    def target(self, i: int) -> np.ndarray:
        return self.target_flat[self.target_offsets[i] : self.target_offsets[i + 1]]

    @property
    def target_lengths(self) -> np.ndarray:
        return np.diff(self.target_offsets)


def load_split(
    data: DataConfig,
    subsets: str,
    encoder: TargetEncoder,
    max_frames: int,
    max_target_positions: int,
) -> Split:
    """Reads `<root>/<subset>.tsv` for each comma-separated subset and filters utterances."""
    ids, audio, frames, targets = [], [], [], []
    skipped = collections.Counter()
    for subset in [s.strip() for s in subsets.split(",") if s.strip()]:
        path = os.path.join(data.root, f"{subset}.tsv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no manifest for subset {subset!r}")
        for u in read_manifest(path):
            if not u.tgt_text.strip():
                skipped["empty_text"] += 1
                continue
            if u.n_frames <= 0:
                skipped["no_frames"] += 1
                continue
            if u.n_frames > max_frames:
                skipped["too_many_frames"] += 1
                continue
            tgt = encoder.encode(u.tgt_text, u.tgt_lang)
            if len(tgt) > max_target_positions:
                skipped["target_too_long"] += 1
                continue
            ids.append(u.id)
            audio.append(u.audio)
            frames.append(u.n_frames)
            targets.append(tgt)
    if not ids:
        raise ValueError(
            f"{data.root}: no usable utterances in {subsets!r} (skipped {dict(skipped)})"
        )
    lengths = np.array([len(t) for t in targets], np.int64)
    split = Split(
        name=subsets,
        ids=ids,
        audio=audio,
        n_frames=np.asarray(frames, np.int64),
        target_offsets=np.concatenate([[0], np.cumsum(lengths)]),
        target_flat=np.concatenate(targets).astype(np.int32),
        skipped=dict(skipped),
    )
    log.info("%s: %d utterances kept, skipped %s", subsets, len(split), dict(skipped) or "none")
    return split


# --------------------------------------------------------------------------------------------
# Buckets and the batch plan
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Loading one batch (runs in the Grain workers)
# --------------------------------------------------------------------------------------------


class LoadBatch(grain.transforms.Map):
    """Batch descriptor -> padded numpy batch. Reads this process's share of the rows."""

    def __init__(
        self,
        split: Split,
        buckets: list[Bucket],
        audio_root: str,
        cmvn: dict,
        num_mel_bins: int,
        sampling_rate: int = 16000,
        skip_bad_audio: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.split, self.buckets, self.audio_root = split, buckets, audio_root
        self.cmvn, self.num_mel_bins, self.sampling_rate = cmvn, num_mel_bins, sampling_rate
        self.skip_bad_audio = skip_bad_audio
        self.process_index, self.process_count = process_index, process_count
        self._gcmvn = {}  # stats path -> {"mean", "std"}, loaded once per worker

    def features(self, i: int) -> np.ndarray:
        """Utterance i -> normalised features float32 [frames, num_mel_bins]."""
        from s2t_jax.frontend import features as fe

        kind, x = load_features_or_waveform(
            self.split.audio[i], self.audio_root, self.sampling_rate
        )
        if kind == "waveform":
            x = fe.kaldi_fbank([x], self.sampling_rate, self.num_mel_bins)[0]
        if x.shape[1] != self.num_mel_bins:
            raise ValueError(
                f"{self.split.audio[i]}: {x.shape[1]} feature bins, config says {self.num_mel_bins}"
            )
        for step in self.cmvn:
            if step["kind"] == "utterance":
                x = fe.utterance_cmvn(
                    x[None], np.ones((1, len(x)), np.int32), step["norm_means"], step["norm_vars"]
                )[0]
            else:
                stats = self._gcmvn.get(step["stats_npz_path"])
                if stats is None:
                    stats = self._gcmvn[step["stats_npz_path"]] = fe.load_global_cmvn(
                        step["stats_npz_path"]
                    )
                x = ((x - stats["mean"]) / stats["std"]).astype(np.float32)
        return x

    def map(self, record):
        bucket = self.buckets[record["bucket"]]
        rows = record["rows"]
        per = len(rows) // self.process_count
        rows = rows[self.process_index * per : (self.process_index + 1) * per]
        n = len(rows)
        out = {
            "features": np.zeros((n, bucket.frames, self.num_mel_bins), np.float32),
            "attention_mask": np.zeros((n, bucket.frames), np.int32),
            "prev_tokens": np.full((n, bucket.target_len), PAD, np.int32),
            "target": np.full((n, bucket.target_len), PAD, np.int32),
            "index": np.asarray(rows, np.int32),
            "bad": np.zeros((n,), np.int32),
        }
        for r, i in enumerate(rows):
            if i < 0:
                continue
            try:
                x = self.features(int(i))
                if len(x) > bucket.frames:
                    raise ValueError(
                        f"{self.split.audio[i]}: {len(x)} frames, manifest says "
                        f"{self.split.n_frames[i]} (bucket {bucket.frames})"
                    )
            except (OSError, ValueError) as e:
                if not self.skip_bad_audio:
                    raise
                log.warning("skipping utterance %s: %s", self.split.ids[i], e)
                out["index"][r], out["bad"][r] = -1, 1
                continue
            out["features"][r, : len(x)] = x
            out["attention_mask"][r, : len(x)] = 1
            tgt = self.split.target(int(i))
            out["target"][r, : len(tgt)] = tgt
            out["prev_tokens"][r, 0] = EOS
            out["prev_tokens"][r, 1 : len(tgt)] = tgt[:-1]
        return out


# --------------------------------------------------------------------------------------------
# The loader
# --------------------------------------------------------------------------------------------


def _absl_flags_parsed():
    """Grain reads absl flags; outside absl.app (tests, notebooks) mark them as parsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


class Loader:
    """Iterates numpy batches with Grain workers; `get_state`/`set_state` checkpoint it."""

    def __init__(
        self, plan: BatchPlan, load: LoadBatch, worker_count: int = 0, worker_buffer_size: int = 2
    ):
        self.plan, self.load = plan, load
        self.worker_count, self.worker_buffer_size = worker_count, worker_buffer_size
        self.consumed = 0
        self._it = None

    @property
    def buckets(self) -> list[Bucket]:
        return self.plan.buckets

    def _start(self):
        _absl_flags_parsed()
        source = self.plan.from_batch(self.consumed)
        loader = grain.DataLoader(
            data_source=source,
            sampler=grain.samplers.IndexSampler(len(source), shuffle=False, num_epochs=1, seed=0),
            operations=[self.load],
            worker_count=self.worker_count,
            worker_buffer_size=self.worker_buffer_size,
        )
        return iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        if self._it is None:
            if self.consumed >= len(self.plan):
                raise StopIteration
            self._it = self._start()
        batch = next(self._it)
        self.consumed += 1
        return batch

    def epoch_of(self, consumed: int | None = None) -> int:
        consumed = self.consumed if consumed is None else consumed
        return consumed // self.plan.batches_per_epoch

    def get_state(self) -> dict:
        return {"consumed": self.consumed, "plan": repr(self.plan)}

    def set_state(self, state: dict) -> None:
        if state.get("plan") != repr(self.plan):
            log.warning(
                "data plan changed since the checkpoint: %s -> %s",
                state.get("plan"),
                repr(self.plan),
            )
        self.close()
        self.consumed = int(state["consumed"])

    def close(self) -> None:
        """Stops the worker processes (also needed before interpreter exit)."""
        it, self._it = self._it, None
        if it is not None:
            del it


def make_loader(
    data: DataConfig,
    split: Split,
    subset: str,
    *,
    is_train: bool,
    frame_buckets,
    max_tokens: int,
    seed: int,
    num_shards: int,
    num_epochs: int = 1,
    max_sentences: int | None = None,
    worker_count: int = 0,
    skip_bad_audio: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> Loader:
    """A Loader for one split, with the transforms the data config gives that split."""
    if data.raw.get("use_audio_input"):
        raise ValueError("use_audio_input (raw-waveform models) is not supported; S2T reads fbank")
    if data.input_channels != 1:
        raise ValueError(f"input_channels={data.input_channels}: only 1 is supported")
    buckets, bucket_of = make_buckets(split, frame_buckets, max_tokens, num_shards, max_sentences)
    plan = BatchPlan(
        bucket_of,
        buckets,
        seed,
        shuffle=is_train,
        num_epochs=num_epochs,
        name=f"{subset}:{len(split)}:{[dataclasses.astuple(b) for b in buckets]}",
    )
    load = LoadBatch(
        split,
        buckets,
        data.audio_root,
        data.cmvn(subset, is_train),
        data.input_feat_per_channel,
        data.sampling_rate,
        skip_bad_audio,
        process_index,
        process_count,
    )
    return Loader(plan, load, worker_count)
