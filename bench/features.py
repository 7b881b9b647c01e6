"""Feature-extraction throughput: s2t_jax's Speech2TextFeatureExtractor against transformers'.

Why: transformers' numpy path (what runs without torchaudio) computes Kaldi fbanks one frame at
a time in Python; ours batches every frame of every utterance. This measures both, in the same
process, on the same 60 s batch of real speech (8 utterances of 2-12 s cut from
../shared/audio, or from tests/assets when that is missing), with the same call
(`padding=True, return_tensors="np"`), and reports seconds of audio per wall-clock second.

The first call of each is timed apart (warm-up: imports, caches, thread pool, page faults);
steady-state calls alternate ours/theirs so that load from other processes hits both alike, each
after a 0.2 s pause (OpenBLAS threads spin for ~0.1 s after transformers' np.dot calls and would
otherwise eat a core during the next run). CPU seconds are shown too (all threads of this
process): on a shared machine they say what the wall clock cannot.

    python bench/features.py [--repeats 15] [--single-thread] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from s2t_jax.frontend import fbank  # noqa: E402
from s2t_jax.frontend.audio import load_audio  # noqa: E402
from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor  # noqa: E402

SR = 16000
DURATIONS_S = [2, 4, 6, 8, 10, 12, 9, 9]  # 60 s in all
RECORDINGS = ["1272-128104-0000.flac", "1089_134686_000007_000004.wav", "jfk.flac"]


def speech_batch() -> tuple[list[np.ndarray], list[str]]:
    """8 utterances cut in turn from the recordings laid end to end (wrapping round)."""
    shared = REPO / ".." / "shared" / "audio"
    paths = [shared / name for name in RECORDINGS if (shared / name).is_file()]
    if not paths:
        paths = [REPO / "tests" / "assets" / RECORDINGS[0]]
    tape = np.concatenate([load_audio(p, SR) for p in paths])  # [samples]
    batch, start = [], 0
    for seconds in DURATIONS_S:
        idx = (start + np.arange(seconds * SR)) % tape.shape[0]
        batch.append(tape[idx])
        start += seconds * SR
    return batch, [str(p.resolve()) for p in paths]


def timed(fn, settle_s: float = 0.2) -> tuple[float, float]:
    # OpenBLAS worker threads spin for ~0.1 s after a BLAS call (transformers calls np.dot per
    # utterance); settling first keeps one run's spinning threads out of the next one's timing.
    time.sleep(settle_s)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="steady-state calls of each")
    parser.add_argument("--single-thread", action="store_true", help="no frame-chunk threads")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    logging.disable(logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    if args.single_thread:
        fbank.USE_THREADS = False
    batch, sources = speech_batch()
    audio_s = sum(len(w) for w in batch) / SR
    ours = Speech2TextFeatureExtractor()
    theirs = transformers.Speech2TextFeatureExtractor()
    call = dict(sampling_rate=SR, padding=True, return_tensors="np")
    runs = {"s2t_jax": lambda: ours(batch, **call), "transformers": lambda: theirs(batch, **call)}

    load_before = os.getloadavg()
    warmup = {name: timed(fn) for name, fn in runs.items()}
    steady: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for i in range(args.repeats):
        order = list(runs) if i % 2 == 0 else list(runs)[::-1]
        for name in order:
            steady[name].append(timed(runs[name]))
    load_after = os.getloadavg()

    got, want = runs["s2t_jax"](), runs["transformers"]()
    max_diff = float(np.abs(got["input_features"] - want["input_features"]).max())

    report = {
        "audio_seconds": audio_s,
        "utterances_s": DURATIONS_S,
        "sources": sources,
        "cpu_count": os.cpu_count(),
        "threads": not args.single_thread and fbank.USE_THREADS,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "max_abs_diff_cmvn_features": max_diff,
        "results": {},
    }
    print(
        f"batch: {len(batch)} utterances, {audio_s:.1f} s of audio; {os.cpu_count()} CPUs; "
        f"threads={'off' if not report['threads'] else 'on'}; "
        f"load average {load_before[0]:.2f} -> {load_after[0]:.2f}"
    )
    print(
        f"{'extractor':14s} {'warm-up s':>10s} {'median s':>9s} {'min s':>8s} "
        f"{'audio s/s (median)':>19s} {'audio s/s (best)':>17s} {'CPU s (median)':>15s}"
    )
    for name in runs:
        walls = [w for w, _ in steady[name]]
        cpus = [c for _, c in steady[name]]
        median, best = statistics.median(walls), min(walls)
        row = {
            "warmup_s": warmup[name][0],
            "median_s": median,
            "min_s": best,
            "cpu_median_s": statistics.median(cpus),
            "audio_s_per_s_median": audio_s / median,
            "audio_s_per_s_best": audio_s / best,
        }
        report["results"][name] = row
        print(
            f"{name:14s} {row['warmup_s']:10.4f} {median:9.4f} {best:8.4f} "
            f"{row['audio_s_per_s_median']:19.0f} {row['audio_s_per_s_best']:17.0f} "
            f"{row['cpu_median_s']:15.4f}"
        )
    ours_row, ref_row = report["results"]["s2t_jax"], report["results"]["transformers"]
    report["speedup_median"] = ref_row["median_s"] / ours_row["median_s"]
    report["speedup_best"] = ref_row["min_s"] / ours_row["min_s"]
    report["speedup_cpu"] = ref_row["cpu_median_s"] / ours_row["cpu_median_s"]
    print(
        f"speed-up, s2t_jax over transformers: {report['speedup_median']:.1f}x (median wall), "
        f"{report['speedup_best']:.1f}x (best wall), {report['speedup_cpu']:.1f}x (CPU time); "
        f"max |diff| of CMVN'd features {max_diff:.1e}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
