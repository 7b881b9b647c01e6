"""Our jitted train step vs transformers' (PyTorch) on the same s2t-small-shaped batch.

Both do forward + backward + clip + Adam on a random-init s2t_transformer_s (29.5M params,
vocab 10000, tied) in float32 with dropout 0.1. The two run in one process, one step each in
turn, so a shared machine's changing load hits both alike; we report medians of the per-pair
times and of their ratio. (torch's OpenMP threads are told to sleep, not spin, between steps.)
MFU = analytic train FLOPs (s2t_jax.training.flops) per second over the measured matmul peak: the best
median rate of a square float32 matmul chain, in jax or torch.

    python bench/train_step.py [--batch 8 --frames 1024 --target 64 --steps 8]
"""

import argparse
import functools
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from shapes import s2t_small  # noqa: E402  (bench/ is on sys.path when run as a script)

from s2t_jax.models.config import Speech2TextConfig  # noqa: E402
from s2t_jax.training import flops, train_state  # noqa: E402
from s2t_jax.training.task import Task  # noqa: E402

SMALL = s2t_small(tied=True)  # dropout, attention and activation dropout 0.1


def make_batch(batch, frames, target, vocab, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.linspace(frames * 3 // 4, frames, batch).astype(int)
    mask = (np.arange(frames)[None] < lengths[:, None]).astype(np.int32)
    feats = (rng.normal(size=(batch, frames, 80)) * mask[..., None]).astype(np.float32)
    tokens = rng.integers(4, vocab, size=(batch, target)).astype(np.int32)
    tokens[:, -1] = 2
    prev = np.concatenate([np.full((batch, 1), 2, np.int32), tokens[:, :-1]], axis=1)
    return {"features": feats, "attention_mask": mask, "prev_tokens": prev, "target": tokens}


def jax_step(batch):
    """-> (run one step, compile seconds)."""
    train_state.use_unrolled_threefry_on_cpu()  # as train.py does on CPU
    cfg = Speech2TextConfig(**SMALL)
    opt = ml_collections.ConfigDict(
        dict(lr=2e-3, lr_scheduler="inverse_sqrt", warmup_updates=10000, warmup_init_lr=-1.0,
             adam_betas=(0.9, 0.999), adam_eps=1e-8, weight_decay=0.0, clip_norm=10.0,
             label_smoothing=0.1, ignore_prefix_size=0, ctc_weight=0.0, update_freq=1,
             encoder_freezing_updates=0)
    )  # fmt: skip
    task = Task.from_config(opt, cfg, specaugment=None)
    state = [train_state.init_state(task, jax.random.key(0))]
    batch = jax.device_put(batch)
    rng = jax.random.key(1)
    step = jax.jit(functools.partial(train_state.train_step, task), donate_argnums=(0,))
    start = time.perf_counter()
    compiled = step.lower(state[0], batch, rng).compile()
    compile_s = time.perf_counter() - start

    def run():
        state[0], metrics = compiled(state[0], batch, rng)
        jax.block_until_ready(metrics["loss"])

    return run, compile_s


def torch_step(batch):
    torch.manual_seed(0)
    config = transformers.Speech2TextConfig(
        **{**SMALL, "conv_kernel_sizes": list(SMALL["conv_kernel_sizes"])}
    )
    model = transformers.Speech2TextForConditionalGeneration(config).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    b = {k: torch.from_numpy(v).long() if v.dtype == np.int32 else torch.from_numpy(v)
         for k, v in batch.items()}  # fmt: skip

    def run():
        out = model(input_features=b["features"], attention_mask=b["attention_mask"],
                    decoder_input_ids=b["prev_tokens"], labels=b["target"])  # fmt: skip
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()

    return run


def matmul_rates(n=1024, rounds=5):
    """Median FLOP/s of a 4-matmul chain in jax and in torch, measured in turns."""
    a_j = jax.numpy.ones((n, n)) / n
    chain = jax.jit(lambda x: x @ a_j @ a_j @ a_j @ a_j)
    chain(a_j).block_until_ready()
    a_t = torch.ones(n, n) / n
    rates = {"jax": [], "torch": []}
    for _ in range(rounds):
        for name, run in (("jax", lambda: chain(a_j).block_until_ready()),
                          ("torch", lambda: a_t @ a_t @ a_t @ a_t @ a_t)):  # fmt: skip
            start = time.perf_counter()
            for _ in range(5):
                run()
            rates[name].append(5 * 4 * 2 * n**3 / (time.perf_counter() - start))
    return {k: float(np.median(v)) for k, v in rates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--target", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    host = make_batch(args.batch, args.frames, args.target, SMALL["vocab_size"])
    run_jax, compile_s = jax_step(host)
    run_torch = torch_step(host)
    for _ in range(args.warmup):
        run_torch()
        run_jax()
    times = {"jax": [], "torch": []}
    for _ in range(args.steps):
        for name, run in (("torch", run_torch), ("jax", run_jax)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    peaks = matmul_rates()
    peak = max(peaks.values())
    step_flops = flops.train_flops(Speech2TextConfig(**SMALL), args.batch, args.frames, args.target)
    ratio = float(np.median(np.asarray(times["torch"]) / np.asarray(times["jax"])))
    print(
        f"s2t-small fp32, batch {args.batch} x {args.frames} frames -> {args.target} tokens: "
        f"{step_flops / 1e9:.1f} GFLOP/step; matmul peak {peak / 1e9:.1f} GFLOP/s "
        f"(jax {peaks['jax'] / 1e9:.1f}, torch {peaks['torch'] / 1e9:.1f}); "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    )
    for name in ("jax", "torch"):
        s = float(np.median(times[name]))
        print(
            f"  {name:5s}: {1 / s:.3f} steps/s (median {s:.3f} s/step, min "
            f"{min(times[name]):.3f}), MFU {100 * step_flops / s / peak:.1f}%"
        )
    print(f"  speed-up jax vs torch (median of paired steps): {ratio:.2f}x; "
          f"jax compile {compile_s:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
