"""Runs the fuzz cases that could crash or exhaust a process, one after the other, in a child.

`python -m tests.fuzz_worker CASES_JSON OUT_JSONL` reads the cases tests/test_fuzz.py wrote and
appends one JSON line per case: first `{"start": i}` (so a crash names the case it died in),
then its outcome: `{"case": i, "ok": true, "problem": ...}` when the call returned (`problem` is
a sanity check of the result that failed, or null), else the exception's type, its base classes
and its message. No JAX here: each load is the library's own reading code, nothing else.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _check_waveform(x) -> str | None:
    if not isinstance(x, np.ndarray) or x.ndim != 1 or x.dtype != np.float32:
        return f"not a float32 [samples] array: {type(x).__name__}"
    if x.size == 0 or not np.isfinite(x).all():
        return "empty or non-finite waveform"
    return None


def _check_features(x) -> str | None:
    if x.ndim != 2 or x.shape[0] == 0 or not np.isfinite(x).all():
        return f"features {x.dtype}{x.shape} empty or non-finite"
    return None


def _arrays(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _arrays(v)
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _arrays(v)
    elif isinstance(tree, np.ndarray):
        yield tree


def run_case(case: dict) -> str | None:
    """Runs one case; returns a problem with its result, or None. Exceptions propagate."""
    kind = case["kind"]
    if kind == "torch":
        from s2t_jax.checkpoints.safe_pickle import load_torch_checkpoint

        loaded = load_torch_checkpoint(case["path"])
        total = sum(a.nbytes for a in _arrays(loaded))
        return None if total <= case["max_bytes"] else f"{total} bytes from a small file"
    if kind == "config":
        from s2t_jax.models.config import Speech2TextConfig

        config = Speech2TextConfig.from_json_file(case["path"])
        config.subsampled_length(1000)
        return None if config.head_dim > 0 else "head_dim <= 0"
    if kind == "audio":
        from s2t_jax.frontend.audio import load_audio

        return _check_waveform(load_audio(case["path"]))
    if kind == "entry":
        from s2t_jax.frontend.featurize import Featurizer

        features, seconds = Featurizer(num_mel_bins=80)(case["entry"], case["root"])
        return _check_features(features) or (None if seconds > 0 else "0 seconds")
    if kind == "manifest":
        from s2t_jax.data.manifest import read_manifest

        bad = []
        rows = read_manifest(case["path"], on_bad_row=bad.append)
        counted = len(rows) + len(bad)
        if counted != case["data_lines"]:
            return f"{len(rows)} rows + {len(bad)} bad != {case['data_lines']} data lines"
        return None
    if kind == "array":
        from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor

        array = np.load(case["path"], allow_pickle=True)
        if case.get("as_list") and array.ndim >= 1:
            array = list(array)
        out = Speech2TextFeatureExtractor()(array, sampling_rate=16000, return_attention_mask=True)
        features = np.asarray(out["input_features"])
        mask = np.asarray(out["attention_mask"])
        if not np.isfinite(features).all() or (mask.sum(axis=-1) == 0).any():
            return "non-finite features or a row with no valid frame"
        return None
    raise ValueError(f"unknown case kind {kind!r}")


def main(cases_path: str, out_path: str) -> None:
    with open(cases_path) as f:
        cases = json.load(f)
    with open(out_path, "a") as out:
        for i, case in enumerate(cases):
            out.write(json.dumps({"start": i}) + "\n")
            out.flush()
            started = time.perf_counter()
            try:
                record = {"case": i, "ok": True, "problem": run_case(case)}
            except BaseException as e:  # noqa: BLE001 - every outcome is recorded and judged
                record = {
                    "case": i,
                    "ok": False,
                    "type": type(e).__name__,
                    "bases": [c.__name__ for c in type(e).__mro__],
                    "message": str(e),
                }
            record["seconds"] = round(time.perf_counter() - started, 4)
            out.write(json.dumps(record) + "\n")
            out.flush()


if __name__ == "__main__":
    main(*sys.argv[1:])
