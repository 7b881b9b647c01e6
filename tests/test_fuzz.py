"""A seeded fuzz test over every kind of bad input: checkpoint records, config.json, audio files,
manifest audio entries, manifests, waveform arrays and generate() arguments.

Each generated input must be handled (a sane result: finite, non-empty, bounded) or refused
with a named error: a ValueError or OSError (pickle's UnpicklingError for checkpoints) whose
message names the file, field or argument. A bare KeyError, TypeError, IndexError,
ZeroDivisionError or MemoryError fails, and so does a result that is NaN, empty or larger than
its file could hold. The loads that could crash the interpreter (libsndfile, numpy strided
views, pickles) run in a child process (tests/fuzz_worker.py), so a crash fails this test with
the case that caused it instead of killing the run; generate() runs here, on a tiny model.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from s2t_jax import Speech2TextConfig, Speech2TextForConditionalGeneration
from tests.hf_models import TINY

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261203
NAMED_BASES = {"ValueError", "OSError", "UnpicklingError"}
WORKER_TIMEOUT_S = 240


# --------------------------------------------------------------------------------------------
# Case generators: each returns a list of case dicts the worker understands, with `name`, the
# text a refusal must mention.
# --------------------------------------------------------------------------------------------


def _flip(rng, data: bytes, lo: int, hi: int, count: int) -> bytes:
    out = bytearray(data)
    hi = min(hi, len(out))
    for pos in rng.integers(lo, max(hi, lo + 1), size=count):
        if pos < len(out):
            out[pos] = int(rng.integers(0, 256))
    return bytes(out)


_STORAGE = object()


class _Record:
    def __init__(self, offset, size, stride):
        self.args = (offset, size, stride)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (_STORAGE, *self.args, False, {}))


def _crafted(record, floats: int) -> bytes:
    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is _STORAGE:
                return ("storage", torch.FloatStorage, "0", "cpu", floats)
            return None

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump({"w": record})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
        z.writestr("archive/data/0", np.arange(floats, dtype=np.float32).tobytes())
    return out.getvalue()


def torch_cases(rng, d: Path) -> list[dict]:
    buffer = io.BytesIO()
    state = {
        "a": torch.randn(3, 4),
        "b": torch.arange(5),
        "c": torch.randn(2).half(),
        "t": torch.randn(4, 3).t(),
        "nested": {"d": torch.ones(2, 2)},
    }
    torch.save(state, buffer)
    base = buffer.getvalue()
    with zipfile.ZipFile(io.BytesIO(base)) as z:
        members = {n: z.read(n) for n in z.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    blobs = [base]
    for _ in range(40):  # a damaged pickle stream, repacked into a valid zip
        damaged = _flip(rng, members[pkl], 2, len(members[pkl]), int(rng.integers(1, 6)))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as z:
            for name, data in members.items():
                z.writestr(name, damaged if name == pkl else data)
        blobs.append(out.getvalue())
    for _ in range(40):  # tensor records with random offsets, shapes and strides
        ndim = int(rng.integers(0, 4))
        pick = [0, 1, 2, 3, 7, -1, 2**31, 2**40, 2**62]
        size = tuple(int(rng.choice(pick[:5])) for _ in range(ndim))
        stride = tuple(int(rng.choice(pick)) for _ in range(ndim))
        offset = int(rng.choice(pick))
        blobs.append(_crafted(_Record(offset, size, stride), int(rng.integers(1, 9))))
    for _ in range(10):  # truncated or damaged zips
        cut = int(rng.integers(1, len(base)))
        blobs.append(base[:cut] if rng.random() < 0.5 else _flip(rng, base, 0, len(base), 8))
    cases = []
    for i, blob in enumerate(blobs):
        path = d / f"torch_{i}.bin"
        path.write_bytes(blob)
        cases.append({"kind": "torch", "path": str(path), "name": str(path), "max_bytes": 4096})
    return cases


_WILD_VALUES = [None, "32", "nan", 0, -1, 1e9, 2**40, 0.5, 3.7, True, [], {}, [0, 0], [5, -1]]


def config_cases(rng, d: Path) -> list[dict]:
    Speech2TextConfig(**TINY).save_pretrained(d / "base_config")
    base = json.loads((d / "base_config" / "config.json").read_text())
    texts = []
    keys = sorted(base)
    for _ in range(70):
        data = dict(base)
        for key in rng.choice(keys, size=int(rng.integers(1, 3)), replace=False):
            value = _WILD_VALUES[int(rng.integers(len(_WILD_VALUES)))]
            data[str(key)] = value
        texts.append(json.dumps(data))
    texts += ["[1, 2, 3]", "{", "", "null", json.dumps(base)[:40], '{"d_model": 1e400}']
    cases = []
    for i, text in enumerate(texts):
        path = d / f"config_{i}.json"
        path.write_text(text)
        cases.append({"kind": "config", "path": str(path), "name": str(path)})
    return cases


def audio_cases(rng, d: Path) -> list[dict]:
    wave = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    bases = []
    for fmt, subtype, ext in (("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac")):
        buffer = io.BytesIO()
        soundfile.write(buffer, wave, 16000, format=fmt, subtype=subtype)
        bases.append((ext, buffer.getvalue()))
    blobs = []
    for _ in range(60):
        ext, base = bases[int(rng.integers(len(bases)))]
        roll = rng.random()
        if roll < 0.5:  # the header: rates, channels, lengths, block sizes
            blob = _flip(rng, base, 0, 64, int(rng.integers(1, 4)))
        elif roll < 0.7:
            blob = base[: int(rng.integers(0, len(base)))]
        elif roll < 0.85:
            blob = _flip(rng, base, 64, len(base), 20)
        else:
            blob = base + rng.bytes(int(rng.integers(1, 200)))
        blobs.append((ext, blob))
    cases = []
    for i, (ext, blob) in enumerate(blobs):
        path = d / f"audio_{i}.{ext}"
        path.write_bytes(blob)
        cases.append({"kind": "audio", "path": str(path), "name": str(path)})
    return cases


def entry_cases(rng, d: Path) -> list[dict]:
    good = rng.standard_normal((20, 80)).astype(np.float32)
    np.save(d / "good.npy", good)
    nan = good.copy()
    nan[3, 4] = np.nan
    np.save(d / "nan.npy", nan)
    with zipfile.ZipFile(d / "feats.zip", "w", zipfile.ZIP_STORED) as z:
        z.write(d / "good.npy", "good.npy")
    size = (d / "feats.zip").stat().st_size
    entries = ["good.npy", "nan.npy", "missing.npy", "feats.zip", "feats.zip:1:2:3"]
    for _ in range(25):
        offset = int(rng.choice([0, 1, 38, 100, size - 1, size + 5, -4]))
        length = int(rng.choice([0, 1, 128, 6400, 6528, size, 2**40, -1]))
        entries.append(f"feats.zip:{offset}:{length}")
    for i in range(8):  # .npy headers that lie about the shape or dtype
        shape = [(10**9, 80), (20, 80, 2), (20,), (0, 80), (20, 80)][i % 5]
        descr = ["<f4", "<i8", "|O", "<f2", "<c8"][i % 5]
        with open(d / f"lie_{i}.npy", "wb") as f:
            header = {"descr": descr, "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(f, header)
            f.write(good.tobytes()[: int(rng.integers(0, good.nbytes + 1))])
        entries.append(f"lie_{i}.npy")
    return [{"kind": "entry", "entry": e, "root": str(d), "name": e.split(":")[0]} for e in entries]


def manifest_cases(rng, d: Path) -> list[dict]:
    cases = []
    pieces = [b"utt", b"a.wav", b"12", b"hello", b"", b"\xff\xfe", b"\xc3", b"x\ry", b"-5", b"1e3"]
    for i in range(30):
        lines = [b"id\taudio\tn_frames\ttgt_text\tspeaker"]
        data_lines = 0
        for _ in range(int(rng.integers(0, 12))):
            fields = [pieces[int(rng.integers(len(pieces)))] for _ in range(rng.integers(1, 8))]
            line = b"\t".join(fields)
            lines.append(line)
            data_lines += bool(line.strip(b"\r"))
        path = d / f"manifest_{i}.tsv"
        path.write_bytes(b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b""))
        cases.append(
            {"kind": "manifest", "path": str(path), "name": str(path), "data_lines": data_lines}
        )
    return cases


def array_cases(rng, d: Path) -> list[dict]:
    arrays = []
    for _ in range(50):
        length = int(rng.choice([0, 1, 399, 400, 4000]))
        shape = [(length,), (length, 2), (2, length), (), (1, 1, length)][int(rng.integers(5))]
        dtype = rng.choice(["float32", "float64", "float16", "int16", "int32", "uint8", "bool"])
        x = (rng.standard_normal(shape) * 0.1).astype(dtype)
        if x.size and np.issubdtype(x.dtype, np.floating) and rng.random() < 0.4:
            with np.errstate(over="ignore"):  # 1e20 in float16 is inf: that is the point
                x.flat[int(rng.integers(x.size))] = rng.choice([np.nan, np.inf, 1e20, -1e30])
        arrays.append((x, bool(rng.random() < 0.3)))
    arrays.append((np.array(["not", "audio"]), False))
    arrays.append((np.zeros(400, np.complex64), False))
    cases = []
    for i, (x, as_list) in enumerate(arrays):
        path = d / f"array_{i}.npy"
        np.save(path, x)
        cases.append({"kind": "array", "path": str(path), "name": "raw_speech", "as_list": as_list})
    return cases


# --------------------------------------------------------------------------------------------
# The risky loads, in a child process
# --------------------------------------------------------------------------------------------


def _judge(case: dict, outcome: dict) -> str | None:
    """None when the outcome is acceptable, else what is wrong with it."""
    if outcome["ok"]:
        return outcome["problem"] and f"returned, but {outcome['problem']}"
    if not NAMED_BASES & set(outcome["bases"]):
        return f"bare {outcome['type']}: {outcome['message'][:300]}"
    if case["name"] not in outcome["message"]:
        return f"{outcome['type']} does not name {case['name']!r}: {outcome['message'][:300]}"
    return None


def test_fuzz_file_and_array_inputs(tmp_path):
    rng = np.random.default_rng(SEED)
    cases = []
    for make in (torch_cases, config_cases, audio_cases, entry_cases, manifest_cases, array_cases):
        cases += make(rng, tmp_path)
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    out = tmp_path / "outcomes.jsonl"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz_worker", str(tmp_path / "cases.json"), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT_S,
    )
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    outcomes = {r["case"]: r for r in records if "case" in r}
    started = [r["start"] for r in records if "start" in r]
    if proc.returncode != 0 or len(outcomes) != len(cases):
        last = cases[started[-1]] if started else None
        pytest.fail(
            f"the worker died (exit {proc.returncode}) in case {last}:\n{proc.stderr[-3000:]}"
        )
    failures = []
    for i, case in enumerate(cases):
        problem = _judge(case, outcomes[i])
        if problem:
            failures.append(f"{case['kind']} {case.get('path', case.get('entry'))}: {problem}")
    kinds = {k: sum(c["kind"] == k for c in cases) for k in {c["kind"] for c in cases}}
    refused = sum(not o["ok"] for o in outcomes.values())
    assert not failures, f"{len(failures)} of {len(cases)} inputs mishandled:\n" + "\n".join(
        failures[:40]
    )
    # The generators must reach both sides: inputs that load and inputs that are refused.
    assert len(cases) >= 300 and 0.1 < refused / len(cases) < 0.95, (kinds, refused)


# --------------------------------------------------------------------------------------------
# generate(): arguments, in this process (no crash risk, a tiny model)
# --------------------------------------------------------------------------------------------


def _generate_cases(rng):
    good = rng.standard_normal((2, 40, TINY["input_feat_per_channel"])).astype(np.float32)
    mask = np.ones((2, 40), np.int32)
    cases = [("ok", dict(input_features=good, attention_mask=mask, max_length=6), None)]
    cases.append(("ok", dict(input_features=good[0], max_length=6), None))
    for _ in range(18):  # every one of the 9 kinds, twice on average
        features, kwargs, name = good.copy(), dict(max_length=6), "input_features"
        attention = mask.copy()
        roll = int(rng.integers(9))
        if roll == 0:
            features = features[:, : int(rng.integers(0, 1))]
            attention = attention[:, : features.shape[1]]
        elif roll == 1:
            features[int(rng.integers(2)), int(rng.integers(40)), 0] = rng.choice([np.nan, np.inf])
        elif roll == 2:
            attention[int(rng.integers(2))] = 0
            name = "attention_mask"
        elif roll == 3:
            features = features[:0]
            attention = attention[:0]
        elif roll == 4:
            features = np.full((2, 40, 3), 0.5, np.float32)
        elif roll == 5:
            features = [["a", "b"]]
        elif roll == 6:
            kwargs["length_penalty"], name = float(rng.choice([np.nan, np.inf])), "length_penalty"
        elif roll == 7:
            kwargs["pad_token_id"], name = int(rng.choice([-7, 10**6])), "pad_token_id"
        else:
            kwargs["num_beams"], name = int(rng.choice([0, -2])), "num_beams"
        cases.append(
            ("refuse", dict(input_features=features, attention_mask=attention, **kwargs), name)
        )
    return cases


def test_fuzz_generate_arguments():
    rng = np.random.default_rng(SEED + 1)
    model = Speech2TextForConditionalGeneration(Speech2TextConfig(**TINY))
    for expect, kwargs, name in _generate_cases(rng):
        if expect == "ok":
            ids = np.asarray(model.generate(buckets=None, **kwargs))
            assert ids.ndim == 2 and ids.shape[1] <= 6
            continue
        with pytest.raises(ValueError) as info:
            model.generate(buckets=None, **kwargs)
        assert name in str(info.value), (kwargs.keys(), str(info.value))
