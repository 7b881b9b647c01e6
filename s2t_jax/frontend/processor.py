"""Speech2TextProcessor: the feature extractor and the tokenizer behind one call.

Why: training and inference both need "audio (files or arrays) -> input_features +
attention_mask" and "text -> labels" with the settings saved next to a checkpoint. This wraps
`s2t_jax.frontend.extractor` and `s2t_jax.frontend.tokenizer` with transformers'
`Speech2TextProcessor` semantics (positional first argument is the audio; with both audio and
text, the text ids come back as `labels`) and adds file paths as audio: they are decoded,
down-mixed and resampled to the extractor's rate by `s2t_jax.frontend.audio.load_audio`.
Keywords (of the call and of from_pretrained) go to the component that takes them, where
transformers sends every one to both and lets the feature extractor fail on text-only ones;
`sampling_rate` only concerns audio, and is unused with text alone, as in transformers.

It reads both hub layouts: the older one (preprocessor_config.json + tokenizer files +
special_tokens_map.json, as on facebook/s2t-*) and transformers 5's (processor_config.json with
a nested "feature_extractor" entry + tokenizer files).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

from s2t_jax.frontend.audio import load_audio
from s2t_jax.frontend.extractor import PROCESSOR_NAME, Speech2TextFeatureExtractor
from s2t_jax.frontend.model_inputs import BatchFeature
from s2t_jax.frontend.tokenizer import Speech2TextTokenizer

__all__ = ["Speech2TextProcessor"]


def _parameters(function, skip: int) -> set[str]:
    """Names of `function`'s keyword parameters after its first `skip` (no *args / **kwargs)."""
    params = list(inspect.signature(function).parameters.values())[skip:]
    return {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


# Call keywords each component takes (the processor handles audio, text and sampling_rate).
_EXTRACTOR_CALL = _parameters(Speech2TextFeatureExtractor.__call__, 2) - {"sampling_rate"}
_TOKENIZER_CALL = _parameters(Speech2TextTokenizer.__call__, 2)
# Constructor keywords each component takes, for from_pretrained.
_EXTRACTOR_INIT = _parameters(Speech2TextFeatureExtractor.__init__, 1)
_TOKENIZER_INIT = _parameters(Speech2TextTokenizer.__init__, 3)


def _is_path(item) -> bool:
    return isinstance(item, (str, os.PathLike))


def _split_kwargs(kwargs: dict, first: set[str], second: set[str], what: str):
    """kwargs -> (those `first` takes, those `second` takes); a key both take goes to both,
    a key neither takes is a TypeError naming it."""
    unknown = sorted(set(kwargs) - first - second)
    if unknown:
        raise TypeError(f"{what}: unexpected keyword arguments {unknown}")
    return (
        {k: v for k, v in kwargs.items() if k in first},
        {k: v for k, v in kwargs.items() if k in second},
    )


class Speech2TextProcessor:
    """Feature extractor + tokenizer, loaded and saved together."""

    def __init__(
        self, feature_extractor: Speech2TextFeatureExtractor, tokenizer: Speech2TextTokenizer
    ):
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs) -> Speech2TextProcessor:
        """Load from either hub layout. Each keyword goes to the component whose constructor
        takes it (padding_value to the feature extractor, tgt_lang to the tokenizer,
        padding_side to both); one that neither takes is a TypeError."""
        feature_extractor = Speech2TextFeatureExtractor.from_pretrained(directory)
        # Keys of its saved config that it keeps without using are its too, as in transformers.
        fe_keys = _EXTRACTOR_INIT | set(feature_extractor.extra_config)
        fe_kwargs, tok_kwargs = _split_kwargs(
            kwargs, fe_keys, _TOKENIZER_INIT, f"{cls.__name__}.from_pretrained"
        )
        if fe_kwargs:
            feature_extractor = Speech2TextFeatureExtractor.from_pretrained(directory, **fe_kwargs)
        tokenizer = Speech2TextTokenizer.from_pretrained(directory, **tok_kwargs)
        return cls(feature_extractor, tokenizer)

    def save_pretrained(
        self, save_directory: str | os.PathLike, legacy_format: bool = False
    ) -> list[str]:
        """Write transformers 5's layout (processor_config.json + tokenizer files), or with
        `legacy_format=True` the older one (preprocessor_config.json + tokenizer files +
        special_tokens_map.json)."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        written = list(
            self.tokenizer.save_pretrained(
                save_directory,
                special_tokens_map=legacy_format,
                processor_class=type(self).__name__,
            )
        )
        if legacy_format:
            written.extend(self.feature_extractor.save_pretrained(save_directory))
        else:
            config = {
                "feature_extractor": self.feature_extractor.to_dict(),
                "processor_class": type(self).__name__,
            }
            path = save_directory / PROCESSOR_NAME
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            written.append(str(path))
        return written

    def _load_paths(self, audio, sampling_rate):
        """Replace file paths by waveforms at the extractor's rate; return (audio, rate)."""
        target = self.feature_extractor.sampling_rate
        if _is_path(audio):
            return load_audio(audio, target), target
        if isinstance(audio, (list, tuple)) and any(_is_path(a) for a in audio):
            if all(_is_path(a) for a in audio):
                return [load_audio(a, target) for a in audio], target
            # Mixed: arrays keep the caller's sampling_rate, which the extractor checks.
            return [load_audio(a, target) if _is_path(a) else a for a in audio], sampling_rate
        return audio, sampling_rate

    def __call__(self, *args, audio=None, sampling_rate=None, text=None, **kwargs) -> BatchFeature:
        """Features for `audio` (arrays or file paths), ids for `text`, or both with the ids
        as `labels`. Keywords go to the component that takes them (padding, max_length, ...
        to both); one that no given input uses is a TypeError naming it."""
        if args:
            audio, args = args[0], args[1:]
        if args:
            raise TypeError("Speech2TextProcessor takes audio as its only positional argument")
        if audio is None and text is None:
            raise ValueError("You need to specify either an `audio` or `text` input to process.")
        fe_kwargs, tok_kwargs = _split_kwargs(
            kwargs,
            _EXTRACTOR_CALL if audio is not None else set(),
            _TOKENIZER_CALL if text is not None else set(),
            type(self).__name__,
        )
        inputs = encodings = None
        if audio is not None:
            audio, sampling_rate = self._load_paths(audio, sampling_rate)
            inputs = self.feature_extractor(audio, sampling_rate=sampling_rate, **fe_kwargs)
        if text is not None:
            encodings = self.tokenizer(text, **tok_kwargs)
        if text is None:
            return inputs
        if audio is None:
            return encodings
        inputs["labels"] = encodings["input_ids"]
        return inputs

    def decode(self, token_ids, **kwargs) -> str:
        return self.tokenizer.decode(token_ids, **kwargs)

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(sequences, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return list(Speech2TextFeatureExtractor.model_input_names)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(feature_extractor={self.feature_extractor!r}, tokenizer={self.tokenizer!r})"
