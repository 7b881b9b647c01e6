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
import numbers
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
    do_sample=False,
    temperature=1.0,
    top_k=50,
    top_p=1.0,
    repetition_penalty=1.0,
    bad_words_ids=None,
    suppress_tokens=None,
    begin_suppress_tokens=None,
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
    do_sample: bool = False
    top_k: int = 0  # 0: no top-k filter (only applied when sampling)
    top_p: bool = False  # whether top-p filters (its value is traced)
    repetition_penalty: bool = False  # whether it applies (its value is traced)
    bad_words_ids: tuple[tuple[int, ...], ...] = ()
    suppress_tokens: tuple[int, ...] = ()
    begin_suppress_tokens: tuple[int, ...] = ()
    # What the loop records per step besides the ids (generate's return_dict_in_generate):
    # "scores" (processed), "logits" (raw), "beam_indices".
    outputs: tuple[str, ...] = ()
    # Scorers beside the decoder (decoding/fusion.py): joint CTC/attention decoding and LM
    # shallow fusion. Weights are static: each value is its own compile, as in ESPnet's
    # recipes, where they are fixed per run.
    ctc_weight: float = 0.0
    ctc_pre_beam: int = 0
    lm_weight: float = 0.0
    length_bonus: float = 0.0
    lm_config: object = None  # the LM's LMConfig (hashable), None without an LM


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
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    bad_words_ids: tuple[tuple[int, ...], ...] | None = None
    suppress_tokens: tuple[int, ...] | None = None
    begin_suppress_tokens: tuple[int, ...] | None = None
    # Ours (not transformers'): see StaticSettings and decoding/fusion.py.
    ctc_weight: float = 0.0
    ctc_pre_beam: int = 0  # 0: int(1.5 * num_beams), at least 4 (ESPnet's pre-beam)
    lm_weight: float = 0.0
    length_bonus: float = 0.0
    lm_config: object = None
    # ESPnet's length limits from each row's encoder length (runtime values, not compiles;
    # see processors.length_limits). None: no such limit.
    maxlenratio: float | None = None
    minlenratio: float | None = None

    @property
    def fused(self) -> bool:
        return self.ctc_weight > 0 or self.lm_config is not None or self.length_bonus != 0

    def static(self, outputs: tuple[str, ...] = ()) -> StaticSettings:
        """The compile-time part; `outputs` names what the loop records per step."""
        pad = self.pad_token_id if self.pad_token_id is not None else self.eos_token_id
        bad = self.bad_words_ids or ()
        if self.eos_token_id is not None:  # transformers drops a bad word that is just eos
            bad = tuple(w for w in bad if w != (self.eos_token_id,))
        return StaticSettings(
            num_beams=self.num_beams,
            max_length=self.max_length,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            decoder_start_token_id=self.decoder_start_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=pad,
            do_sample=self.do_sample,
            top_k=self.top_k if self.do_sample else 0,
            top_p=self.do_sample and self.top_p < 1.0,
            repetition_penalty=self.repetition_penalty != 1.0,
            bad_words_ids=bad,
            suppress_tokens=tuple(self.suppress_tokens or ()),
            begin_suppress_tokens=tuple(self.begin_suppress_tokens or ()),
            outputs=tuple(outputs),
            ctc_weight=float(self.ctc_weight),
            ctc_pre_beam=(
                (self.ctc_pre_beam or max(4, int(1.5 * self.num_beams))) if self.ctc_weight else 0
            ),
            lm_weight=float(self.lm_weight) if self.lm_config is not None else 0.0,
            length_bonus=float(self.length_bonus),
            lm_config=self.lm_config,
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
        beams_or_samples = self.num_beams if not (self.do_sample and self.num_beams == 1) else None
        if self.num_return_sequences < 1 or (
            beams_or_samples is not None and self.num_return_sequences > beams_or_samples
        ):
            errors.append(
                f"num_return_sequences={self.num_return_sequences} must be in "
                f"[1, num_beams={self.num_beams}] (greedy search returns one sequence; "
                "sampling returns any number)"
            )
        if self.early_stopping not in (True, False, "never"):
            errors.append(f"early_stopping={self.early_stopping!r} must be True, False or 'never'")
        if self.min_length < 0 or self.no_repeat_ngram_size < 0:
            errors.append("min_length and no_repeat_ngram_size must be >= 0")
        if not math.isfinite(self.length_penalty):
            errors.append(f"length_penalty={self.length_penalty} must be a finite number")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            errors.append(f"repetition_penalty={self.repetition_penalty} must be > 0")
        if self.do_sample not in (True, False):
            errors.append(f"do_sample={self.do_sample!r} must be True or False")
        if self.do_sample:
            if not (math.isfinite(self.temperature) and self.temperature > 0):
                errors.append(f"temperature={self.temperature} must be > 0 when sampling")
            if self.top_k < 0:
                errors.append(f"top_k={self.top_k} must be >= 0 (0: no top-k filter)")
            if not 0.0 <= self.top_p <= 1.0:
                errors.append(f"top_p={self.top_p} must be in [0, 1]")
        if self.forced_bos_token_id in (self.suppress_tokens or ()):
            errors.append(
                f"forced_bos_token_id={self.forced_bos_token_id} is also in suppress_tokens: "
                "every token would be -inf at the first step (transformers refuses it too)"
            )
        for name in ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens"):
            value = getattr(self, name) or ()
            ids = [t for word in value for t in word] if name == "bad_words_ids" else value
            if any(not 0 <= t < vocab_size for t in ids):
                errors.append(f"{name}={value} must hold ids in [0, vocab_size={vocab_size})")
            if name == "bad_words_ids" and any(len(word) == 0 for word in value):
                errors.append(f"bad_words_ids={value} must not hold an empty word")
        for name in (
            "forced_bos_token_id",
            "decoder_start_token_id",
            "eos_token_id",
            "pad_token_id",
        ):
            value = getattr(self, name)
            if value is not None and not 0 <= value < vocab_size:
                errors.append(f"{name}={value} must be in [0, vocab_size={vocab_size})")
        if not (math.isfinite(self.ctc_weight) and 0.0 <= self.ctc_weight <= 1.0):
            errors.append(f"ctc_weight={self.ctc_weight} must be in [0, 1]")
        if not (math.isfinite(self.lm_weight) and self.lm_weight >= 0.0):
            errors.append(f"lm_weight={self.lm_weight} must be a finite number >= 0")
        if not math.isfinite(self.length_bonus):
            errors.append(f"length_bonus={self.length_bonus} must be finite")
        if self.ctc_pre_beam < 0 or (self.ctc_pre_beam and self.ctc_pre_beam > vocab_size):
            errors.append(f"ctc_pre_beam={self.ctc_pre_beam} must be in [0, vocab_size]")
        if self.lm_weight and self.lm_config is None:
            errors.append(f"lm_weight={self.lm_weight} needs a language model (lm=)")
        for name in ("maxlenratio", "minlenratio"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, numbers.Real)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value >= 0
            ):
                errors.append(
                    f"{name}={value!r} must be None or a finite number >= 0 (ESPnet's "
                    "negative ratio, a fixed length, is max_new_tokens / min_new_tokens here)"
                )
        if self.lm_config is not None and self.lm_config.vocab_size != vocab_size:
            errors.append(
                f"the LM's vocabulary has {self.lm_config.vocab_size} entries, the model's "
                f"{vocab_size}: shallow fusion needs the same vocabulary"
            )
        if self.fused and self.do_sample:
            errors.append("sampling with ctc_weight / an LM is not supported")
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


def _token_list(value, name):
    """A list of ids (transformers' suppress_tokens) as a tuple of ints, None for unset."""
    if value is None:
        return None
    try:
        return tuple(int(t) for t in value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a list of token ids, got {value!r}") from e


def _word_list(value):
    """transformers' bad_words_ids (a list of lists of ids) as a tuple of tuples."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"bad_words_ids must be a non-empty list of lists of ids, got {value!r}")
    return tuple(_token_list(word, "each bad_words_ids entry") for word in value)


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
        do_sample=values["do_sample"],
        temperature=float(values["temperature"]),
        top_k=int(values["top_k"] or 0),
        top_p=float(values["top_p"]),
        repetition_penalty=float(values["repetition_penalty"]),
        bad_words_ids=_word_list(values["bad_words_ids"]),
        suppress_tokens=_token_list(values["suppress_tokens"], "suppress_tokens"),
        begin_suppress_tokens=_token_list(values["begin_suppress_tokens"], "begin_suppress_tokens"),
    )
