"""Cepstral mean and variance normalisation (CMVN) of log-mel features, utterance or global.

Why one module: the feature extractor, the training loader and evaluation all normalise raw
fbank features, and must do it with the same numbers. Both kinds floor the spread as fairseq
floors utterance CMVN's variance, std >= sqrt(1e-10), so digital silence, pure tones, one-frame
utterances and stats with a zero std give finite features instead of NaN or inf.

A normalisation is a list of steps applied in order (fairseq's `feature_transforms`): each step
is an `UtteranceCMVN` or a `GlobalCMVN`, or the data config's dict for one (`cmvn_step`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GlobalCMVN",
    "UtteranceCMVN",
    "apply_cmvn",
    "cmvn_step",
    "load_global_cmvn",
    "utterance_cmvn",
]

VARIANCE_FLOOR = 1e-10  # fairseq's utterance CMVN floor


def utterance_cmvn(
    features: np.ndarray,
    mask: np.ndarray | None = None,
    normalize_means: bool = True,
    normalize_vars: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Utterance-level CMVN (transformers' numbers, NaN-free) of [frames, n_mels] or of a padded
    batch [batch, frames, n_mels] whose valid frames are where `mask` [batch, frames] is 1.

    Statistics come from the valid frames only, accumulated in float64; the variance is about
    the mean and floored as in fairseq, std = sqrt(max(var, 1e-10)), so constant features map to
    0 instead of NaN. Every row is mapped with them (padded rows are the caller's to overwrite).
    `out` (2-D case) receives the float32 result in place.
    """
    if features.ndim != 2:
        if mask is None:
            mask = np.ones(features.shape[:2], np.int32)
        return np.stack(
            [utterance_cmvn(f, m, normalize_means, normalize_vars) for f, m in zip(features, mask)]
        )
    keep = None if mask is None else np.asarray(mask, bool)
    valid = features if keep is None else features[keep]  # [frames', n_mels]
    count = max(valid.shape[0], 1)
    mean = (valid.sum(axis=0, dtype=np.float64) / count).astype(np.float32)  # [n_mels]
    centred = np.subtract(features, mean, out=out, dtype=np.float32)  # [frames, n_mels]
    if not normalize_vars:
        if not normalize_means:
            centred += mean
        return centred
    valid_centred = centred if keep is None else centred[keep]  # [frames', n_mels]
    var = np.square(valid_centred).sum(axis=0, dtype=np.float64) / count  # [n_mels]
    scale = (1.0 / np.sqrt(np.maximum(var, VARIANCE_FLOOR))).astype(np.float32)  # [n_mels]
    if normalize_means:
        centred *= scale
        return centred
    return np.multiply(features, scale, out=centred, dtype=np.float32)


def load_global_cmvn(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a fairseq `gcmvn.npz` (arrays `mean` and `std`, each [n_mels])."""
    with np.load(path) as stats:
        missing = {"mean", "std"} - set(stats.files)
        if missing:
            raise ValueError(f"{path}: global CMVN stats lack {sorted(missing)}")
        return {
            "mean": np.asarray(stats["mean"], np.float64),
            "std": np.asarray(stats["std"], np.float64),
        }


@dataclass(frozen=True)
class UtteranceCMVN:
    """Normalise each utterance by its own statistics (`utterance_cmvn`)."""

    normalize_means: bool = True
    normalize_vars: bool = True

    def __call__(self, features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """[frames, n_mels] -> float32 [frames, n_mels], into `out` (which must not be `features`)."""
        return utterance_cmvn(features, None, self.normalize_means, self.normalize_vars, out=out)


class GlobalCMVN:
    """Normalise by fixed corpus statistics (fairseq's `global_cmvn` transform).

    The std is floored at sqrt(VARIANCE_FLOOR), as utterance CMVN floors its variance, so a band
    whose std is 0 in the stats maps to finite values. The float32 mean and scale are computed
    once here, not per utterance; the object pickles, so loader workers get it ready-made.
    """

    def __init__(self, mean, std, source: str = "global CMVN stats"):
        self.mean = np.asarray(mean, np.float64).reshape(-1)  # [n_mels]
        self.std = np.asarray(std, np.float64).reshape(-1)  # [n_mels]
        if self.mean.shape != self.std.shape:
            raise ValueError(f"{source}: mean {self.mean.shape} and std {self.std.shape} differ")
        self.source = source
        self._mean32 = self.mean.astype(np.float32)  # [n_mels]
        floored = np.maximum(self.std, np.sqrt(VARIANCE_FLOOR))  # [n_mels]
        self._scale32 = (1.0 / floored).astype(np.float32)  # [n_mels]

    @classmethod
    def load(cls, path: str | os.PathLike) -> GlobalCMVN:
        stats = load_global_cmvn(path)
        return cls(stats["mean"], stats["std"], source=os.fspath(path))

    @property
    def num_mel_bins(self) -> int:
        return self.mean.shape[0]

    def __call__(self, features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """[frames, n_mels] -> float32 [frames, n_mels], into `out` when given."""
        centred = np.subtract(features, self._mean32, out=out, dtype=np.float32)
        centred *= self._scale32
        return centred

    def __repr__(self) -> str:
        return f"GlobalCMVN({self.source!r}, {self.num_mel_bins} bins)"


CMVNStep = UtteranceCMVN | GlobalCMVN


def cmvn_step(spec: CMVNStep | Mapping) -> CMVNStep:
    """A step, or the data config's description of one (`DataConfig.cmvn`): {"kind": "utterance",
    "norm_means", "norm_vars"} or {"kind": "global", "stats_npz_path"} (the stats are read now)."""
    if isinstance(spec, (UtteranceCMVN, GlobalCMVN)):
        return spec
    kind = spec.get("kind")
    if kind == "utterance":
        return UtteranceCMVN(bool(spec.get("norm_means", True)), bool(spec.get("norm_vars", True)))
    if kind == "global":
        return GlobalCMVN.load(spec["stats_npz_path"])
    raise ValueError(f"unknown CMVN step {spec!r}: kind must be 'utterance' or 'global'")


def apply_cmvn(
    steps: Sequence[CMVNStep], features: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """Run `steps` in order over one utterance's raw fbank [frames, n_mels] -> float32.

    Only the last step writes into `out`: utterance CMVN reads its input again after writing, so
    a step's input and output must not share memory. No steps: a float32 copy.
    """
    if not steps:
        if out is None:
            return np.array(features, dtype=np.float32)
        out[:] = features
        return out
    for k, step in enumerate(steps):
        features = step(features, out=out if k == len(steps) - 1 else None)
    return features
