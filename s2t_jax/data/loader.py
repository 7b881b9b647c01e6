"""Loading batches: batch descriptors -> padded numpy batches, in Grain worker processes.

  * `LoadBatch` (a Grain Map run in the workers) reads each row's features through the one
    audio -> features path (`s2t_jax.frontend.featurize.Featurizer`: .npy, zip member or sound
    file, then CMVN), pads them into the bucket, and builds the teacher-forcing inputs.
  * `Loader` wraps grain.DataLoader. Its state is the number of batches handed out: resuming
    rebuilds the loader from that batch on, valid for any number of workers (Grain's own state
    is tied to the worker count).

Batches are dicts of numpy arrays: features f32 [B, T, F], attention_mask i32 [B, T],
prev_tokens / target i32 [B, L] (pad = 1), index i32 [B] (row in the split, -1 for padding
rows), bad i32 [B] (1 where the audio could not be read and the row was emptied).
"""

from __future__ import annotations

import dataclasses
import logging

import grain
import numpy as np

from s2t_jax.data.batching import BatchPlan, Bucket, make_buckets
from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.split import Split
from s2t_jax.data.vocab import EOS, PAD
from s2t_jax.frontend.featurize import Featurizer

log = logging.getLogger(__name__)


class LoadBatch(grain.transforms.Map):
    """Batch descriptor -> padded numpy batch. Reads this process's share of the rows."""

    def __init__(
        self,
        split: Split,
        buckets: list[Bucket],
        featurize: Featurizer,
        audio_root: str,
        skip_bad_audio: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ):
        self.split, self.buckets = split, buckets
        self.featurize, self.audio_root = featurize, audio_root
        self.skip_bad_audio = skip_bad_audio
        self.process_index, self.process_count = process_index, process_count

    def map(self, record):
        bucket = self.buckets[record["bucket"]]
        rows = record["rows"]
        per = len(rows) // self.process_count
        rows = rows[self.process_index * per : (self.process_index + 1) * per]
        n = len(rows)
        out = {
            "features": np.zeros((n, bucket.frames, self.featurize.num_mel_bins), np.float32),
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
                x, _ = self.featurize(self.split.audio[i], self.audio_root)  # [frames, mels]
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
        data.featurizer(subset, is_train),
        data.audio_root,
        skip_bad_audio,
        process_index,
        process_count,
    )
    return Loader(plan, load, worker_count)
