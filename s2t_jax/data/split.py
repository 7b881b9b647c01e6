"""The utterances of a training or validation split, filtered once, with their encoded targets.

`load_split` reads the manifests, tokenises every target once, and skips (counting why)
utterances with empty text, no or too many frames, or too many target tokens, so the batches
built from it never meet an utterance the model cannot take.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os

import numpy as np

from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.manifest import read_manifest
from s2t_jax.data.vocab import TargetEncoder

log = logging.getLogger(__name__)


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
    skip_bad_rows: bool = True,
) -> Split:
    """Reads `<root>/<subset>.tsv` for each comma-separated subset and filters utterances.

    A manifest row that cannot be parsed is logged and counted as `bad_row` when
    `skip_bad_rows` (the trainer passes `data.skip_bad_audio`), else a ManifestError.
    """
    ids, audio, frames, targets = [], [], [], []
    skipped = collections.Counter()
    for subset in [s.strip() for s in subsets.split(",") if s.strip()]:
        path = os.path.join(data.root, f"{subset}.tsv")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no manifest for subset {subset!r}")

        def report(bad):
            log.warning("skipping manifest row %s", bad)
            skipped["bad_row"] += 1

        for u in read_manifest(path, report if skip_bad_rows else None):
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
