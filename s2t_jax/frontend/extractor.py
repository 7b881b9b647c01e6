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
  * `return_attention_mask` from the config is honoured (transformers always forces it on).
Config keys it does not know are kept as attributes and written back, as transformers does.
Global CMVN from a fairseq `gcmvn.npz` (keys `mean`, `std`) can replace utterance CMVN.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from s2t_jax.frontend.audio import AudioError, validate_waveform
from s2t_jax.frontend.cmvn import GlobalCMVN, UtteranceCMVN, apply_cmvn, load_global_cmvn
from s2t_jax.frontend.fbank import FRAME_SECONDS, kaldi_fbank, num_frames
from s2t_jax.frontend.model_inputs import BatchFeature
from s2t_jax.frontend.padding import check_side, padding_strategy, round_up

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
        check_side("padding_side", padding_side)
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
        # Unknown config keys become attributes and are saved again, as in transformers.
        self.extra_config = copy.deepcopy(kwargs)
        for key, value in kwargs.items():
            if hasattr(type(self), key):
                raise ValueError(f"config key {key!r} would shadow {type(self).__name__}.{key}")
            setattr(self, key, value)

    # ---- config -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {
            **copy.deepcopy(self.extra_config),
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

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        Path(json_file_path).write_text(self.to_json_string(), encoding="utf-8")

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> Speech2TextFeatureExtractor:
        return cls(**json.loads(Path(json_file).read_text(encoding="utf-8")))

    @classmethod
    def from_dict(cls, config: dict[str, Any], **kwargs) -> Speech2TextFeatureExtractor:
        """Unlike transformers, keywords absent from `config` are kept too, not dropped."""
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

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        """Write preprocessor_config.json in transformers' format; returns [its path]."""
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise AssertionError(
                f"Provided path ({save_directory}) should be a directory, not a file"
            )
        save_directory.mkdir(parents=True, exist_ok=True)
        config = {**self.to_dict(), "processor_class": "Speech2TextProcessor"}
        out = save_directory / FEATURE_EXTRACTOR_NAME
        out.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return [str(out)]

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    # ---- featurisation ------------------------------------------------------------------

    @staticmethod
    def _as_waveforms(raw_speech) -> list[np.ndarray]:
        """A single waveform or a batch (list of waveforms / 2-D array) -> list of float32
        [samples]. Values are cast as transformers casts them (integers are not rescaled); a
        shape or value that is not audio is an AudioError naming `raw_speech` or its index."""
        if isinstance(raw_speech, np.ndarray) or hasattr(raw_speech, "__array__"):
            array = _as_float32(raw_speech, "raw_speech")
            if array.ndim > 2:
                raise AudioError(
                    f"raw_speech: only mono-channel audio is supported, got an array of shape "
                    f"{array.shape} (expected [samples] or a batch [batch, samples])"
                )
            if array.ndim == 2:
                if array.shape[0] == 0:
                    raise AudioError(f"raw_speech: an empty batch (shape {array.shape})")
                return list(array)
            return [array]
        if isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise AudioError("raw_speech is an empty list")
            first = raw_speech[0]
            if isinstance(first, (np.ndarray, list, tuple)) or hasattr(first, "__array__"):
                waves = [_as_float32(w, f"raw_speech[{i}]") for i, w in enumerate(raw_speech)]
                for i, w in enumerate(waves):
                    if w.ndim != 1:
                        raise AudioError(
                            f"raw_speech[{i}]: only mono-channel audio is supported, got a "
                            f"waveform of shape {w.shape} (expected [samples])"
                        )
                return waves
            return [_as_float32(raw_speech, "raw_speech")]
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
        with return_tensors; without CMVN, and for utterances of different lengths, the same
        containers as transformers, see `_as_output`) and, unless turned off, an int32
        frame-level `attention_mask`.
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
        with np.errstate(over="ignore", invalid="ignore"):  # huge samples: refused just below
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
            return self._as_output(batch, bool(cmvn), return_tensors)

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
        batch = {"input_features": list(padded), "attention_mask": list(mask)}
        if not return_attention_mask:
            del batch["attention_mask"]
        return self._as_output(batch, bool(cmvn), return_tensors)

    @staticmethod
    def _as_output(batch: dict, normalised: bool, return_tensors) -> BatchFeature:
        """transformers' output types: with return_tensors=None, lists of per-utterance arrays,
        except that without CMVN input_features is one numpy array (an object array of
        utterances when their lengths differ), as its padding step leaves it."""
        if return_tensors is None and not normalised:
            batch["input_features"] = BatchFeature(
                {"input_features": batch["input_features"]}, tensor_type="np"
            )["input_features"]
        return BatchFeature(batch, tensor_type=return_tensors)

    # ---- padding features ---------------------------------------------------------------

    def pad(
        self,
        processed_features,
        padding: bool | str = True,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Pad (and truncate) features already extracted, as transformers' `pad`: a dict of
        per-utterance [frames, n_mels] lists or arrays, or a list of such dicts (a collate_fn's
        input), with `padding_value` on `padding_side`; no CMVN. Returns numpy arrays unless
        return_tensors says otherwise."""
        if isinstance(processed_features, (list, tuple)) and processed_features:
            if isinstance(processed_features[0], Mapping):
                keys = processed_features[0].keys()
                processed_features = {k: [row[k] for row in processed_features] for k in keys}
        main = self.model_input_names[0]
        if not isinstance(processed_features, Mapping) or main not in processed_features:
            keys = list(processed_features) if isinstance(processed_features, Mapping) else []
            raise ValueError(
                f"You should supply a BatchFeature or list of BatchFeature that includes {main}, "
                f"but you provided {keys}"
            )
        features = dict(processed_features)
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        if len(features[main]) == 0:
            if return_attention_mask:
                features["attention_mask"] = []
            return BatchFeature(features)
        return_tensors = return_tensors or "np"
        strategy = padding_strategy(padding)
        if strategy == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if truncation and max_length is None:
            raise ValueError("truncation=True needs max_length")
        features = {k: [np.asarray(v) for v in values] for k, values in features.items()}
        sizes = {len(values) for values in features.values()}
        if len(sizes) > 1:
            raise ValueError(
                "Some items in the output dictionary have a different batch size than others."
            )
        if return_attention_mask and "attention_mask" not in features:
            features["attention_mask"] = [np.ones(len(f), np.int32) for f in features[main]]
        if truncation:
            limit = round_up(max_length, pad_to_multiple_of)
            for key in (main, "attention_mask"):
                if key in features:
                    features[key] = [v[:limit] for v in features[key]]
        if strategy is not None:
            lengths = [len(f) for f in features[main]]
            target = max(lengths) if strategy == "longest" else max_length
            target = round_up(target, pad_to_multiple_of)
            fills = {main: self.padding_value, "attention_mask": 0}
            for key, fill in fills.items():
                if key in features:
                    features[key] = [self._pad_rows(v, target, fill) for v in features[key]]
        features[main] = [
            f.astype(np.float32) if f.dtype == np.float64 else f for f in features[main]
        ]
        return BatchFeature(features, tensor_type=return_tensors)

    def _pad_rows(self, value: np.ndarray, target: int, fill) -> np.ndarray:
        """`value` padded along its first axis to `target` rows on padding_side."""
        gap = target - len(value)
        if gap <= 0:
            return value
        before, after = (0, gap) if self.padding_side == "right" else (gap, 0)
        widths = [(before, after)] + [(0, 0)] * (value.ndim - 1)
        return np.pad(value, widths, constant_values=fill)

    def cmvn_steps(self) -> list[UtteranceCMVN | GlobalCMVN]:
        """The normalisation this extractor applies, as `cmvn.py` steps (read from the current
        settings): global CMVN when it has stats, else utterance CMVN unless turned off."""
        if self.global_cmvn is not None:
            return [GlobalCMVN(self.global_cmvn["mean"], self.global_cmvn["std"])]
        if self.do_ceptral_normalize:
            return [UtteranceCMVN(self.normalize_means, self.normalize_vars)]
        return []


def _as_float32(values, name: str) -> np.ndarray:
    """np.asarray(values, float32), or an AudioError naming `name` for strings, complex
    numbers, objects and ragged nests, which would otherwise fail (or cast) deep in numpy."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as e:  # ragged nests, unconvertible objects
        raise AudioError(f"{name}: not an array of audio samples ({e})") from e
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.floating)
        or np.issubdtype(array.dtype, np.integer)
        or array.dtype == np.bool_
    ):
        raise AudioError(f"{name}: audio samples must be real numbers, got dtype {array.dtype}")
    return array.astype(np.float32, copy=False)
