"""`Speech2TextFeatureExtractor`: waveforms -> padded, normalised model inputs, as transformers'.

Kaldi fbank (`fbank.py`) + utterance or global CMVN (`cmvn.py`) + padding, truncation and the
attention mask, with transformers' constructor arguments, config files and call semantics.
Deliberate differences from transformers, all at edges where it breaks:
  * CMVN floors the variance at 1e-10 (std = sqrt(max(var, 1e-10))) as fairseq does, so digital
    silence, pure tones and one-frame utterances give finite features instead of NaN;
  * an utterance shorter than one frame, or with NaN / Inf samples, is an AudioError naming its
    batch index (transformers gives a numpy error or NaN features);
  * `padding_side="left"` normalises over the real frames (transformers uses the first n rows);
  * frame length / hop / FFT size follow the sampling rate (25 ms / 10 ms / next power of two),
    as in Kaldi, instead of being fixed at 400/160/512 (identical at 16 kHz);
  * `return_attention_mask` from the config is honoured (transformers always forces it on);
  * `return_tensors=None` always gives lists of per-utterance arrays.
Global CMVN from a fairseq `gcmvn.npz` (keys `mean`, `std`) can replace utterance CMVN.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from s2t_jax.frontend.audio import AudioError, validate_waveform
from s2t_jax.frontend.cmvn import GlobalCMVN, UtteranceCMVN, apply_cmvn, load_global_cmvn
from s2t_jax.frontend.fbank import FRAME_SECONDS, kaldi_fbank, num_frames
from s2t_jax.frontend.model_inputs import BatchFeature
from s2t_jax.frontend.padding import padding_strategy, round_up

__all__ = ["Speech2TextFeatureExtractor"]

logger = logging.getLogger(__name__)

FEATURE_EXTRACTOR_NAME = "preprocessor_config.json"
PROCESSOR_NAME = "processor_config.json"


class Speech2TextFeatureExtractor:
    """Speech2Text's feature extractor: Kaldi fbank + utterance (or global) CMVN + padding.

    Constructor arguments and config keys match `transformers.Speech2TextFeatureExtractor`;
    `global_cmvn_path` (a fairseq gcmvn.npz) or `global_cmvn` ({"mean": [...], "std": [...]})
    switch utterance CMVN for global CMVN.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 16000,
        num_mel_bins: int = 80,
        padding_value: float = 0.0,
        dither: float = 0.0,
        do_ceptral_normalize: bool = True,
        normalize_means: bool = True,
        normalize_vars: bool = True,
        return_attention_mask: bool = True,
        padding_side: str = "right",
        global_cmvn_path: str | os.PathLike | None = None,
        global_cmvn: dict[str, Any] | None = None,
        **kwargs,
    ):
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.feature_size = feature_size
        self.sampling_rate = sampling_rate
        self.num_mel_bins = num_mel_bins
        self.padding_value = padding_value
        self.dither = dither
        self.do_ceptral_normalize = do_ceptral_normalize
        self.normalize_means = normalize_means
        self.normalize_vars = normalize_vars
        self.return_attention_mask = return_attention_mask
        self.padding_side = padding_side
        stats = load_global_cmvn(global_cmvn_path) if global_cmvn_path is not None else global_cmvn
        self.global_cmvn = None
        if stats is not None:
            mean = np.asarray(stats["mean"], np.float64).reshape(-1)  # [n_mels]
            std = np.asarray(stats["std"], np.float64).reshape(-1)  # [n_mels]
            if mean.shape != (num_mel_bins,) or std.shape != (num_mel_bins,):
                raise ValueError(
                    f"global CMVN stats must have {num_mel_bins} values, "
                    f"got mean {mean.shape}, std {std.shape}"
                )
            self.global_cmvn = {"mean": mean, "std": std}
        kwargs.pop("feature_extractor_type", None)
        kwargs.pop("processor_class", None)
        if kwargs:
            logger.debug("Speech2TextFeatureExtractor ignores config keys %s", sorted(kwargs))

    # ---- config -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {
            "dither": self.dither,
            "do_ceptral_normalize": self.do_ceptral_normalize,
            "feature_extractor_type": type(self).__name__,
            "feature_size": self.feature_size,
            "normalize_means": self.normalize_means,
            "normalize_vars": self.normalize_vars,
            "num_mel_bins": self.num_mel_bins,
            "padding_side": self.padding_side,
            "padding_value": self.padding_value,
            "return_attention_mask": self.return_attention_mask,
            "sampling_rate": self.sampling_rate,
        }
        if self.global_cmvn is not None:
            out["global_cmvn"] = {k: v.tolist() for k, v in self.global_cmvn.items()}
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, config: dict[str, Any], **kwargs) -> Speech2TextFeatureExtractor:
        return cls(**{**config, **kwargs})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> Speech2TextFeatureExtractor:
        """Load from a directory (processor_config.json's `feature_extractor` entry first, else
        preprocessor_config.json, as transformers does) or from a JSON file."""
        path = Path(path)
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            config = config.get("feature_extractor", config)
            return cls.from_dict(config, **kwargs)
        config = None
        processor_file = path / PROCESSOR_NAME
        if processor_file.is_file():
            nested = json.loads(processor_file.read_text(encoding="utf-8"))
            config = nested.get("feature_extractor", nested.get("audio_processor"))
        if config is None and (path / FEATURE_EXTRACTOR_NAME).is_file():
            config = json.loads((path / FEATURE_EXTRACTOR_NAME).read_text(encoding="utf-8"))
        if config is None:
            raise OSError(
                f"{path}: no {FEATURE_EXTRACTOR_NAME}, and no {PROCESSOR_NAME} with a "
                "'feature_extractor' entry"
            )
        return cls.from_dict(config, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write preprocessor_config.json in transformers' format; returns its path."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        config = {**self.to_dict(), "processor_class": "Speech2TextProcessor"}
        out = save_directory / FEATURE_EXTRACTOR_NAME
        out.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return str(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    # ---- featurisation ------------------------------------------------------------------

    @staticmethod
    def _as_waveforms(raw_speech) -> list[np.ndarray]:
        """A single waveform or a batch (list of waveforms / 2-D array) -> list of float32 [samples]."""
        if isinstance(raw_speech, np.ndarray) or hasattr(raw_speech, "__array__"):
            array = np.asarray(raw_speech)
            if array.ndim > 2:
                raise ValueError(
                    f"Only mono-channel audio is supported, got an array of shape {array.shape}"
                )
            if array.ndim == 2:
                return [np.asarray(row, dtype=np.float32) for row in array]
            return [array.astype(np.float32, copy=False)]
        if isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("raw_speech is an empty list")
            first = raw_speech[0]
            if isinstance(first, (np.ndarray, list, tuple)) or hasattr(first, "__array__"):
                waves = [np.asarray(w, dtype=np.float32) for w in raw_speech]
                for w in waves:
                    if w.ndim != 1:
                        raise ValueError(
                            f"Only mono-channel audio is supported, got a waveform of shape {w.shape}"
                        )
                return waves
            return [np.asarray(raw_speech, dtype=np.float32)]
        raise TypeError(
            f"raw_speech must be an array or a list of arrays, got {type(raw_speech).__name__}"
        )

    def _checked_waveform(self, wave: np.ndarray, index: int, from_2d: bool) -> np.ndarray:
        """A waveform that makes at least one frame of finite features, or an AudioError naming
        its batch index: no utterance decodes from 0 frames, and NaN never reaches a model."""
        name = f"raw_speech[{index}]"
        wave = validate_waveform(wave, name=name)  # numeric, non-empty, finite
        if num_frames(len(wave), self.sampling_rate) == 0:
            hint = ""
            if from_2d:
                hint = (
                    "; a 2-D array is a batch [batch, samples], so for [samples, channels] "
                    "audio down-mix it first (s2t_jax.load_audio does for files)"
                )
            frame = round(FRAME_SECONDS * self.sampling_rate)
            raise AudioError(
                f"{name}: {len(wave)} samples, fewer than one {FRAME_SECONDS * 1000:g} ms frame "
                f"({frame} samples at {self.sampling_rate} Hz){hint}"
            )
        return wave

    def __call__(
        self,
        raw_speech,
        padding: bool | str = False,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        sampling_rate: int | None = None,
        return_attention_mask: bool | None = None,
    ) -> BatchFeature:
        """Featurise one waveform or a batch; semantics of transformers' extractor.

        Returns `input_features` (list of [frames, n_mels] float32, or [batch, frames, n_mels]
        with return_tensors) and, unless turned off, an int32 frame-level `attention_mask`.
        """
        if sampling_rate is not None:
            if sampling_rate != self.sampling_rate:
                raise ValueError(
                    f"The feature extractor expects audio sampled at {self.sampling_rate} Hz, but "
                    f"raw_speech was sampled at {sampling_rate} Hz. Resample it first "
                    "(s2t_jax.frontend.audio.load_audio does this for files)."
                )
        else:
            logger.warning(
                "Pass sampling_rate to Speech2TextFeatureExtractor() to catch wrongly sampled audio."
            )
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        strategy = padding_strategy(padding)
        if strategy == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if truncation and max_length is None:
            raise ValueError("truncation=True needs max_length")

        waves = self._as_waveforms(raw_speech)
        from_2d = getattr(raw_speech, "ndim", 0) == 2  # a numpy / jax array of [batch, samples]
        for i, wave in enumerate(waves):
            waves[i] = self._checked_waveform(wave, i, from_2d)
        features = kaldi_fbank(waves, self.sampling_rate, self.num_mel_bins, self.dither)
        for i, f in enumerate(features):
            if not np.isfinite(f).all():
                raise AudioError(
                    f"raw_speech[{i}]: samples too large for a float32 spectrum (largest "
                    f"|sample| {float(np.abs(waves[i]).max()):.3g}; audio is expected in [-1, 1])"
                )
        if truncation:
            limit = round_up(max_length, pad_to_multiple_of)
            features = [f[:limit] for f in features]
        lengths = [f.shape[0] for f in features]
        cmvn = self.cmvn_steps()

        if strategy is None:
            batch = {"input_features": [apply_cmvn(cmvn, f) for f in features]}
            if return_attention_mask:
                batch["attention_mask"] = [np.ones(n, dtype=np.int32) for n in lengths]
            return BatchFeature(batch).convert_to_tensors(return_tensors)

        target = max(lengths) if strategy == "longest" else int(max_length)
        target = round_up(target, pad_to_multiple_of)
        if max(lengths) > target:
            raise ValueError(
                f"An utterance has {max(lengths)} frames, more than max_length={target}; "
                "pass truncation=True to cut it."
            )
        padded = np.full((len(features), target, self.num_mel_bins), self.padding_value, np.float32)
        mask = np.zeros((len(features), target), np.int32)  # [batch, frames]
        for i, f in enumerate(features):
            n = f.shape[0]
            rows = slice(0, n) if self.padding_side == "right" else slice(target - n, target)
            apply_cmvn(cmvn, f, out=padded[i, rows])  # [frames_i, n_mels]
            mask[i, rows] = 1
        if return_tensors is None:
            batch = {"input_features": list(padded), "attention_mask": list(mask)}
        else:
            batch = {"input_features": padded, "attention_mask": mask}
        if not return_attention_mask:
            del batch["attention_mask"]
        return BatchFeature(batch).convert_to_tensors(return_tensors)

    def cmvn_steps(self) -> list[UtteranceCMVN | GlobalCMVN]:
        """The normalisation this extractor applies, as `cmvn.py` steps (read from the current
        settings): global CMVN when it has stats, else utterance CMVN unless turned off."""
        if self.global_cmvn is not None:
            return [GlobalCMVN(self.global_cmvn["mean"], self.global_cmvn["std"])]
        if self.do_ceptral_normalize:
            return [UtteranceCMVN(self.normalize_means, self.normalize_vars)]
        return []
