"""Decoding throughput: our jitted greedy / beam search against transformers' generate (PyTorch CPU).

Both run in this process on the same weights (a random transformers checkpoint of the
s2t-small shape: d_model 256, 12 encoder / 6 decoder layers, 4 heads, ffn 2048, vocab 10000,
conv 1024, converted by our loader) and on the same padded batches of real-audio features:
utterances of 2-15 s cut from ../shared/audio (tests/assets when that is missing), featurised
once, padded to our frame bucket, and handed identically to both. Ours encodes the batch in
length groups (generate's default, see decoding/groups.py): the same encoder states on
every valid frame, without the work on the longest utterance's padding; "ids" says whether the
output is still token for token transformers'.

The random model is made non-degenerate: the output projection is scaled (decisive logits),
cross-attention strengthened and the eos logit raised by a constant, so outputs depend on the
audio and some stop early while others run to max_length (embeddings are untied: with tied
ones the start token, which is eos, makes a random model stop at once).

Cases: batch sizes x {greedy, beam 5} x {forced length (min_length = max_length, so both do
the same number of steps), natural stopping}. For each: utterances/s of both, the ratio, our
compile time (first call minus steady state) apart from the steady state, and whether the ids
are identical. transformers is timed with 1 and 2 torch threads and its best is kept: on a
2-core machine shared with other work, two OpenMP threads can spin on a busy core and would
flatter us. "cpu ratio" compares CPU seconds (all threads of this process) instead of wall
time: on a machine shared with other work it says what the wall clock cannot. Also: the
encoder's achieved GFLOP/s (analytic matmul/conv FLOPs over its jitted
time) against a measured float32 matmul peak.

    python bench/decode.py            # full: batches of 8 and 32, max_length 200
    python bench/decode.py --quick    # batch 8, max_length 60, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from s2t_jax import Speech2TextForConditionalGeneration  # noqa: E402
from s2t_jax.decoding.buckets import DEFAULT_BUCKETS, pad_to_bucket  # noqa: E402
from s2t_jax.models.model import Speech2Text  # noqa: E402
from s2t_jax.parallel.host_devices import use_cpu_cores  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from shapes import s2t_small  # noqa: E402

SMALL = s2t_small(tied=False)
AUDIO = ("1272-128104-0000.flac", "1089_134686_000007_000004.wav", "jfk.flac")
AUDIO_DIRS = (ROOT.parent / "shared" / "audio", ROOT / "tests" / "assets")


def build_models(directory: Path, seed: int = 0):
    """transformers' model (eval, random, made decisive) saved to `directory`, and ours from it."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.Speech2TextConfig(**SMALL)
    hf = transformers.Speech2TextForConditionalGeneration(config).eval()
    with torch.no_grad():
        hf.get_output_embeddings().weight.mul_(8.0)  # decisive logits
        for layer in hf.model.decoder.layers:  # outputs that depend on the audio
            layer.encoder_attn.v_proj.weight.mul_(4.0)
            layer.encoder_attn.out_proj.weight.mul_(4.0)
        w = hf.get_output_embeddings().weight[config.eos_token_id]
        hf.model.decoder.layer_norm.bias.add_(10.0 * w / w.dot(w))  # eos logit + 10
    hf.save_pretrained(directory)
    return hf, Speech2TextForConditionalGeneration.from_pretrained(directory)


def speech_stream() -> np.ndarray:
    """The shared recordings at 16 kHz, end to end (one fallback recording on a clean clone)."""
    from s2t_jax.frontend.audio import load_audio

    waves = []
    for name in AUDIO:
        for folder in AUDIO_DIRS:
            if (folder / name).is_file():
                waves.append(load_audio(folder / name, 16000))
                break
    if not waves:
        raise SystemExit("no audio found in ../shared/audio or tests/assets")
    return np.concatenate(waves)


def speech_batch(stream, n: int, low: float, high: float, rng):
    """n utterances of low..high seconds at random offsets -> bucket-padded (features, mask)."""
    from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor

    cut = []
    for seconds in rng.uniform(low, high, n):
        size = int(seconds * 16000)
        reps = -(-size // len(stream)) + 1
        looped = np.tile(stream, reps)  # recordings wrap around for the longest cuts
        start = int(rng.integers(0, len(stream)))
        cut.append(looped[start : start + size])
    out = Speech2TextFeatureExtractor()(cut, padding=True, sampling_rate=16000, return_tensors="np")
    return pad_to_bucket(out["input_features"], out["attention_mask"], DEFAULT_BUCKETS)


def encoder_flops(cfg, batch: int, frames: int) -> float:
    """Matmul and conv FLOPs (2 per multiply-add) of the encoder on a padded batch."""
    d, total = cfg.d_model, 0.0
    t, c_in = frames, cfg.input_feat_per_channel * cfg.input_channels
    for i, k in enumerate(cfg.conv_kernel_sizes):
        t = (t - 1) // 2 + 1
        c_out = cfg.conv_channels if i < cfg.num_conv_layers - 1 else 2 * d
        total += 2 * t * k * c_in * c_out
        c_in = c_out // 2  # GLU halves the channels
    layer = 4 * 2 * t * d * d + 2 * 2 * t * t * d + 2 * 2 * t * d * cfg.encoder_ffn_dim
    return batch * (total + cfg.encoder_layers * layer)


def best_time(fn, repeats: int, budget_s: float) -> float:
    """Minimum wall time of `fn()` over up to `repeats` calls (fewer once `budget_s` is spent):
    the least disturbed run on a shared machine."""
    times, start = [], time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    return min(times)


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = jnp.ones((n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    seconds = best_time(lambda: dot(a, a).block_until_ready(), repeats, 30.0)
    return 2 * n**3 / seconds / 1e9


def encoder_gflops(model, x, mask, repeats: int) -> tuple[float, float]:
    """(achieved GFLOP/s, seconds) of our jitted encoder on the batch."""
    encode = jax.jit(
        lambda p, x, m: model.module.apply({"params": p}, x, m, method=Speech2Text.encode)
    )
    run = lambda: jax.block_until_ready(encode(model.params, x, mask))  # noqa: E731
    run()
    seconds = best_time(run, repeats, 30.0)
    return encoder_flops(model.config, *x.shape[:2]) / seconds / 1e9, seconds


def hf_generate(hf, x, mask, threads: int, **kwargs):
    import torch

    torch.set_num_threads(threads)
    with torch.no_grad():
        return hf.generate(
            input_features=torch.from_numpy(x), attention_mask=torch.from_numpy(mask), **kwargs
        ).numpy()


def _timed(fn):
    """(result, wall seconds, CPU seconds of this process's threads)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def run_case(hf, ours, x, mask, name, kwargs, args):
    """Warm both up, then rounds that time ours and transformers back to back, so that load
    from other processes hits both alike; each side keeps its best round."""
    n = x.shape[0]
    # x is already padded to a bucket, so this adds no padding; it lets generate() encode the
    # batch in length groups (each utterance padded only to its own bucket). The rows are
    # split over every device (one per core on a CPU host, see --cpu_devices).
    ours_call = lambda: ours.generate(x, mask, buckets=DEFAULT_BUCKETS, **kwargs)  # noqa: E731
    one_call = lambda: ours.generate(x, mask, buckets=DEFAULT_BUCKETS, devices=1, **kwargs)  # noqa: E731
    hf_calls = {t: (lambda t=t: hf_generate(hf, x, mask, t, **kwargs)) for t in args.torch_threads}
    ids, first, _ = _timed(ours_call)
    ours_times = [_timed(ours_call)[1:]]
    one_times = []
    if args.one_device and len(jax.devices()) > 1:
        one_ids = one_call()
        if one_ids.shape != ids.shape or (one_ids != ids).any():
            raise AssertionError(f"{name}: one device and {len(jax.devices())} disagree")
        one_times.append(_timed(one_call)[1])
    hf_times = {}
    for threads, call in hf_calls.items():
        ref, *seconds = _timed(call)  # nothing to compile: the first call counts
        hf_times[threads] = [seconds]
    start = time.perf_counter()
    for _ in range(args.repeats - 1):
        if time.perf_counter() - start > args.budget:
            break
        ours_times.append(_timed(ours_call)[1:])
        if one_times:
            one_times.append(_timed(one_call)[1])
        for threads, call in hf_calls.items():
            hf_times[threads].append(_timed(call)[1:])
    ours_s = min(t[0] for t in ours_times)
    ours_cpu = min(t[1] for t in ours_times)
    hf_threads = min(hf_times, key=lambda t: min(w for w, _ in hf_times[t]))
    hf_s = min(w for w, _ in hf_times[hf_threads])
    hf_cpu = min(c for times in hf_times.values() for _, c in times)
    same = ref.shape == ids.shape and bool((ref == ids).all())
    rows_differ = int((ref != ids).any(1).sum()) if ref.shape == ids.shape else n
    lengths = (ids != ours.config.pad_token_id).sum(1) - 1
    return dict(
        case=name,
        batch=n,
        frames=x.shape[1],
        ours_utt_s=n / ours_s,
        one_device_utt_s=n / min(one_times) if one_times else None,
        hf_utt_s=n / hf_s,
        ratio=hf_s / ours_s,
        cpu_ratio=hf_cpu / ours_cpu,
        ours_s=ours_s,
        hf_s=hf_s,
        ours_cpu_s=ours_cpu,
        hf_cpu_s=hf_cpu,
        hf_threads=hf_threads,
        compile_s=max(0.0, first - ours_s),
        ids_identical=same,
        rows_differ=rows_differ,
        mean_tokens=float(lengths.mean()),
        output_len=int(ids.shape[1]),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, max_length 60")
    parser.add_argument("--batch_sizes", default=None, help="comma list (default 8,32)")
    parser.add_argument("--max_length", type=int, default=None, help="default 200 (60 quick)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls (default 3, 2 quick)"
    )
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per timing loop")
    parser.add_argument("--torch_threads", default="1,2", help="thread counts to try for torch")
    parser.add_argument("--seconds", default=None, help="utterance lengths low,high (2,15)")
    parser.add_argument("--searches", default="greedy,beam5", help="comma list of greedy, beam5")
    parser.add_argument("--modes", default="forced,natural", help="comma list of forced, natural")
    parser.add_argument(
        "--cpu_devices",
        type=int,
        default=None,
        help="XLA:CPU devices to split the batch over (default: one per core)",
    )
    parser.add_argument(
        "--one_device",
        action="store_true",
        help="also time ours on one device (same ids checked): what the split gains",
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    args.batch_sizes = [
        int(b) for b in (args.batch_sizes or ("8" if args.quick else "8,32")).split(",")
    ]
    args.max_length = args.max_length or (60 if args.quick else 200)
    args.repeats = args.repeats or (3 if args.quick else 2)
    args.torch_threads = [int(t) for t in args.torch_threads.split(",")]
    use_cpu_cores(args.cpu_devices)  # before the first JAX array: one XLA:CPU device per core
    low, high = (float(s) for s in (args.seconds or ("2,6" if args.quick else "2,15")).split(","))

    rng = np.random.default_rng(0)
    stream = speech_stream()
    with tempfile.TemporaryDirectory() as tmp:
        hf, ours = build_models(Path(tmp))
    hf_generate(hf, *speech_batch(stream, 1, 2, 3, rng), 1, max_length=5)  # torch warm-up
    peak = matmul_peak_gflops()
    print(
        f"devices: {jax.devices()}  cpu cores: {os.cpu_count()}  float32 matmul peak: {peak:.1f} GFLOP/s"
        f"\ntorch {sys.modules['torch'].__version__}, jax {jax.__version__}"
    )
    print(f"max_length {args.max_length}, utterances {low}-{high} s, best of {args.repeats} rounds")
    results = []
    header = (
        f"{'case':<22}{'batch':>6}{'frames':>7}{'ours utt/s':>11}{'1 dev':>7}{'hf utt/s':>10}"
        f"{'ratio':>7}"
        f"{'torch thr':>10}{'cpu ratio':>10}{'compile s':>10}{'tokens':>8}{'ids':>10}"
    )
    for batch in args.batch_sizes:
        x, mask = speech_batch(stream, batch, low, high, rng)
        gflops, enc_s = encoder_gflops(ours, x, mask, args.repeats)
        print(
            f"\nbatch {batch}: features {x.shape}, encoder {enc_s * 1e3:.0f} ms = "
            f"{gflops:.1f} GFLOP/s ({100 * gflops / peak:.0f}% of matmul peak)"
        )
        print(header)
        for search, beams in (("greedy", 1), ("beam5", 5)):
            if search not in args.searches.split(","):
                continue
            for mode in args.modes.split(","):
                kwargs = dict(num_beams=beams, max_length=args.max_length)
                if beams > 1:
                    kwargs["early_stopping"] = True  # the released checkpoints' setting
                if mode == "forced":
                    kwargs["min_length"] = args.max_length
                r = run_case(hf, ours, x, mask, f"{search}/{mode}", kwargs, args)
                r.update(encoder_gflops=gflops, matmul_peak_gflops=peak)
                results.append(r)
                ids = "same" if r["ids_identical"] else f"{r['rows_differ']} differ"
                print(
                    f"{r['case']:<22}{batch:>6}{r['frames']:>7}{r['ours_utt_s']:>11.2f}"
                    f"{r['one_device_utt_s'] or float('nan'):>7.2f}{r['hf_utt_s']:>10.2f}{r['ratio']:>6.2f}x{r['hf_threads']:>10}"
                    f"{r['cpu_ratio']:>9.2f}x{r['compile_s']:>10.1f}"
                    f"{r['mean_tokens']:>8.1f}{ids:>10}",
                    flush=True,
                )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
