"""Generation settings: read once from a model's files, resolved with transformers' rules.

The one defaulting rule (transformers 5.x): a generation_config.json in the model's directory
wins outright; without one, config.json's generation keys are used; a model not loaded from a
directory uses its config object. Call arguments override those, and transformers' global
defaults fill what nothing set. `read_generation_config` runs once, at `from_pretrained`, and
the result is kept on the model as `model.generation_config`; `resolve_settings` turns it and a
call's arguments into one `GenerationSettings`, which is what every search takes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

# transformers' global defaults (GenerationConfig), used when no file sets a value.
GLOBAL_DEFAULTS = dict(
    num_beams=1,
    max_length=20,
    min_length=0,
    length_penalty=1.0,
    early_stopping=False,
    no_repeat_ngram_size=0,
    num_return_sequences=1,
    forced_bos_token_id=None,
)
TOKEN_KEYS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")
FILE_KEYS = tuple(GLOBAL_DEFAULTS) + TOKEN_KEYS
# The model config's generation fields, read when the model has no directory.
_CONFIG_KEYS = ("num_beams", "max_length", "early_stopping")


@dataclasses.dataclass(frozen=True)
class StaticSettings:
    """What shapes the compiled search; each distinct value (per input shape) is one compile.
    Everything else (min_length, length_penalty, early_stopping, forced BOS, how many sequences
    are returned) is a runtime value of the same compiled function."""

    num_beams: int
    max_length: int
    no_repeat_ngram_size: int
    decoder_start_token_id: int
    eos_token_id: int | None
    pad_token_id: int | None


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Every setting of one search, resolved (see resolve_settings)."""

    num_beams: int = 1
    max_length: int = 21
    min_length: int = 0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    no_repeat_ngram_size: int = 0
    num_return_sequences: int = 1
    forced_bos_token_id: int | None = None
    decoder_start_token_id: int = 2
    eos_token_id: int | None = 2
    pad_token_id: int | None = 1

    def static(self) -> StaticSettings:
        pad = self.pad_token_id if self.pad_token_id is not None else self.eos_token_id
        return StaticSettings(
            num_beams=self.num_beams,
            max_length=self.max_length,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            decoder_start_token_id=self.decoder_start_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=pad,
        )

    def validate(self, vocab_size: int) -> None:
        errors = []
        if self.num_beams < 1:
            errors.append(f"num_beams={self.num_beams} must be >= 1")
        if self.max_length < 2:
            errors.append(
                f"max_length={self.max_length} leaves no room after the decoder start token "
                "(transformers counts the start token in max_length; use max_new_tokens)"
            )
        if not 1 <= self.num_return_sequences <= self.num_beams:
            errors.append(
                f"num_return_sequences={self.num_return_sequences} must be in "
                f"[1, num_beams={self.num_beams}] (greedy search returns one sequence)"
            )
        if self.early_stopping not in (True, False, "never"):
            errors.append(f"early_stopping={self.early_stopping!r} must be True, False or 'never'")
        if self.min_length < 0 or self.no_repeat_ngram_size < 0:
            errors.append("min_length and no_repeat_ngram_size must be >= 0")
        if not math.isfinite(self.length_penalty):
            errors.append(f"length_penalty={self.length_penalty} must be a finite number")
        for name in (
            "forced_bos_token_id",
            "decoder_start_token_id",
            "eos_token_id",
            "pad_token_id",
        ):
            value = getattr(self, name)
            if value is not None and not 0 <= value < vocab_size:
                errors.append(f"{name}={value} must be in [0, vocab_size={vocab_size})")
        if errors:
            raise ValueError("Invalid generation settings: " + "; ".join(errors))


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def read_generation_config(config, source_dir: str | None = None) -> dict[str, Any]:
    """The generation values a model's files set, read once (see the module docstring).

    Only keys that are set are kept, so "max_length" present means a file (or the config
    object) set it: when nothing did, transformers generates 20 new tokens. Token ids the
    files lack come from the model config.
    """
    data = None
    if source_dir:
        data = _read_json(os.path.join(source_dir, "generation_config.json"))
        if data is None:
            data = _read_json(os.path.join(source_dir, "config.json"))
    if data is None:
        data = {k: getattr(config, k) for k in _CONFIG_KEYS}
    found = {k: data[k] for k in FILE_KEYS if data.get(k) is not None}
    for key in TOKEN_KEYS:
        if key not in found:
            found[key] = getattr(config, key, None)
    return found


def _single_id(value, name):
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise NotImplementedError(f"{name} with several ids ({value}) is not supported")
        value = value[0]
    return None if value is None else int(value)


def resolve_settings(model, **kwargs) -> GenerationSettings:
    """kwargs > the model's generation config > global defaults, with transformers' length
    rules (max_new_tokens and min_new_tokens count after the start token).

    model: a loaded model (its `generation_config`, read at load) or a model config (its own
    generation fields). kwargs that are None are unset.
    """
    unknown = sorted(set(kwargs) - set(FILE_KEYS) - {"max_new_tokens", "min_new_tokens"})
    if unknown:
        raise TypeError(f"unknown generation settings {unknown}; known: {sorted(FILE_KEYS)}")
    found = getattr(model, "generation_config", None)
    if found is None:
        config = getattr(model, "config", model)
        found = read_generation_config(config, getattr(model, "source_dir", None))
    given = {k: v for k, v in kwargs.items() if v is not None}
    values = {**GLOBAL_DEFAULTS, **found, **given}
    if "max_new_tokens" in given:
        max_length = int(given["max_new_tokens"]) + 1  # + the decoder start token
    elif "max_length" in given or "max_length" in found:
        max_length = int(values["max_length"])
    else:
        max_length = int(GLOBAL_DEFAULTS["max_length"]) + 1
    min_length = int(values.get("min_length") or 0)
    if given.get("min_new_tokens") is not None:
        min_length = int(given["min_new_tokens"]) + 1
    eos = _single_id(values.get("eos_token_id"), "eos_token_id")
    pad = _single_id(values.get("pad_token_id"), "pad_token_id")
    start = values.get("decoder_start_token_id")
    if start is None:
        start = values.get("bos_token_id")
    if start is None:
        raise ValueError("decoder_start_token_id (or bos_token_id) must be set for generation")
    return GenerationSettings(
        num_beams=int(values["num_beams"]),
        max_length=max_length,
        min_length=min_length,
        length_penalty=float(values["length_penalty"]),
        early_stopping=values["early_stopping"],
        no_repeat_ngram_size=int(values["no_repeat_ngram_size"] or 0),
        num_return_sequences=int(values["num_return_sequences"]),
        forced_bos_token_id=_single_id(values.get("forced_bos_token_id"), "forced_bos_token_id"),
        decoder_start_token_id=_single_id(start, "decoder_start_token_id"),
        eos_token_id=eos,
        pad_token_id=pad if pad is not None else eos,
    )
