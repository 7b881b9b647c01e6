"""`Featurizer`: one utterance's audio (a manifest's `audio` entry) -> normalised features.

Why one class: the training loader, evaluation and the feature extractor must turn the same
audio into the same numbers. This is the only place that does load (sound file, `.npy` or
`zip:offset:length` member, resolved against an audio root) -> resample -> Kaldi fbank -> CMVN.
It is built either from a fairseq data config (`DataConfig.featurizer`: training, and evaluation
of a fairseq model) or from a `Speech2TextFeatureExtractor` (evaluation of a transformers-style model directory), and
pickles, so Grain loader workers receive it with its global stats already loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from s2t_jax.frontend.audio_entry import load_features_or_waveform
from s2t_jax.frontend.cmvn import GlobalCMVN, UtteranceCMVN, apply_cmvn, cmvn_step
from s2t_jax.frontend.fbank import FRAME_SECONDS, HOP_SECONDS, kaldi_fbank

if TYPE_CHECKING:
    from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor

__all__ = ["Featurizer"]


class Featurizer:
    """Audio -> (normalised fbank float32 [frames, num_mel_bins], seconds of audio).

    `cmvn` is the normalisation, in order: `UtteranceCMVN` / `GlobalCMVN` steps or the data
    config's dicts for them (global stats are read here, once). No dither: evaluation and
    training features are deterministic.
    """

    def __init__(
        self,
        sampling_rate: int = 16000,
        num_mel_bins: int = 80,
        cmvn: Sequence[UtteranceCMVN | GlobalCMVN | Mapping] = (),
    ):
        self.sampling_rate = int(sampling_rate)
        self.num_mel_bins = int(num_mel_bins)
        self.cmvn = [cmvn_step(step) for step in cmvn]
        for step in self.cmvn:
            if isinstance(step, GlobalCMVN) and step.num_mel_bins != self.num_mel_bins:
                raise ValueError(
                    f"{step.source}: {step.num_mel_bins} global CMVN values, "
                    f"expected {self.num_mel_bins} (one per mel bin)"
                )

    @classmethod
    def from_extractor(cls, extractor: Speech2TextFeatureExtractor) -> Featurizer:
        """The extractor's own rate, bins and CMVN (not its dither or padding)."""
        return cls(extractor.sampling_rate, extractor.num_mel_bins, extractor.cmvn_steps())

    def normalise(self, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Raw fbank [frames, num_mel_bins] -> normalised float32, into `out` when given."""
        return apply_cmvn(self.cmvn, raw, out=out)

    def __call__(self, audio: str, root: str = "") -> tuple[np.ndarray, float]:
        """`audio` (relative paths are joined to `root`) -> (features [frames, num_mel_bins]
        float32, seconds of audio; for `.npy` features, frames x 10 ms).

        Raises OSError or ValueError naming the file: unreadable, shorter than one frame,
        features with a number of bins other than `num_mel_bins`, or non-finite features (so
        NaN never reaches a train step or a search).
        """
        kind, x = load_features_or_waveform(audio, root, self.sampling_rate)
        if kind == "waveform":
            seconds = x.shape[0] / self.sampling_rate
            x = kaldi_fbank([x], self.sampling_rate, self.num_mel_bins)[0]  # [frames, mels]
        else:
            seconds = x.shape[0] * HOP_SECONDS
        if x.shape[0] == 0:
            raise ValueError(f"{audio}: shorter than one {FRAME_SECONDS * 1000:g} ms frame")
        if x.shape[1] != self.num_mel_bins:
            raise ValueError(f"{audio}: {x.shape[1]} feature bins, expected {self.num_mel_bins}")
        x = self.normalise(x)
        if not np.isfinite(x).all():  # e.g. global CMVN stats that hold NaN or a zero std
            raise ValueError(f"{audio}: features hold NaN or inf after {self.cmvn!r}")
        return x, seconds

    def __repr__(self) -> str:
        return (
            f"Featurizer(sampling_rate={self.sampling_rate}, num_mel_bins={self.num_mel_bins}, "
            f"cmvn={self.cmvn!r})"
        )
