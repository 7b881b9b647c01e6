"""Our jitted train step vs the PyTorch reference's on the same batch.

--encoder transformer (default): against transformers' Speech2Text on s2t-small's shape.
--encoder conformer: s2t_conformer (12 blocks, --pos rel_pos|rope|abs) against fairseq's own
model, which runs in a Python that has fairseq (--fairseq_python, default
/work/fairseq-venv/bin/python) as bench/fairseq_step_worker.py, driven one step at a time so the
two still alternate; without that Python only our side runs, and the report says so.

Both do forward + backward + clip + Adam on a random-init s2t_transformer_s (29.5M params,
vocab 10000, tied) in float32 with dropout 0.1. The two run in one process, one step each in
turn, so a shared machine's changing load hits both alike; we report medians of the per-pair
times and of their ratio. (torch's OpenMP threads are told to sleep, not spin, between steps.)
MFU = analytic train FLOPs (s2t_jax.training.flops) per second over the measured matmul peak: the best
median rate of a square float32 matmul chain, in jax or torch.

    python bench/train_step.py [--batch 8 --frames 1024 --target 64 --steps 8]
    python bench/train_step.py --encoder conformer --pos rel_pos
"""

import argparse
import functools
import os
import subprocess
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads its OpenMP runtime

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from shapes import fairseq_conformer_flags, s2t_conformer, s2t_small  # noqa: E402

from s2t_jax.models.config import Speech2TextConfig  # noqa: E402
from s2t_jax.models.params import abstract_params  # noqa: E402
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


def jax_step(batch, shape=SMALL):
    """-> (run one step, compile seconds)."""
    train_state.use_unrolled_threefry_on_cpu()  # as train.py does on CPU
    cfg = Speech2TextConfig(**shape)
    opt = ml_collections.ConfigDict(
        dict(lr=2e-3, lr_scheduler="inverse_sqrt", warmup_updates=10000, warmup_init_lr=-1.0,
             adam_betas=(0.9, 0.999), adam_eps=1e-8, weight_decay=0.0, clip_norm=10.0,
             label_smoothing=0.1, ignore_prefix_size=0, ctc_weight=0.0, update_freq=1,
             encoder_freezing_updates=0)
    )  # fmt: skip
    task = Task.from_config(opt, cfg, specaugment=None)
    state = [jax.jit(functools.partial(train_state.init_state, task))(jax.random.key(0))]
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


def fairseq_step(batch, python: str, pos: str, tmp: str):
    """fairseq's s2t_conformer step in a worker process -> (run one step, its param count),
    or None when `python` is missing. The worker times its own step (no pipe overhead)."""
    if not os.path.exists(python):
        return None
    path = os.path.join(tmp, "batch.npz")
    np.savez(path, vocab=SMALL["vocab_size"], **batch)
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fairseq_step_worker.py")
    proc = subprocess.Popen(
        [python, worker, path, "--", *fairseq_conformer_flags(pos)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )  # fmt: skip
    ready = proc.stdout.readline().split()
    if not ready or ready[0] != "ready":
        raise RuntimeError(f"{python} {worker}: the fairseq worker did not start")
    seconds = []

    def run():
        proc.stdin.write("step\n")
        proc.stdin.flush()
        seconds.append(float(proc.stdout.readline()))

    run.seconds = seconds
    run.close = lambda: (proc.stdin.write("quit\n"), proc.stdin.flush(), proc.wait())
    return run, int(ready[1])


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
    parser.add_argument("--encoder", choices=("transformer", "conformer"), default="transformer")
    parser.add_argument("--pos", choices=("abs", "rope", "rel_pos"), default="rel_pos")
    parser.add_argument("--fairseq_python", default="/work/fairseq-venv/bin/python")
    args = parser.parse_args()
    host = make_batch(args.batch, args.frames, args.target, SMALL["vocab_size"])
    tmp = tempfile.mkdtemp()
    if args.encoder == "conformer":
        shape, name, ref = s2t_conformer(args.pos), f"s2t_conformer {args.pos}", "fairseq"
        reference = fairseq_step(host, args.fairseq_python, args.pos, tmp)
        if reference is None:
            print(f"no fairseq reference: {args.fairseq_python} is missing; ours only")
        else:
            reference, ref_params = reference
    else:
        shape, name, ref = SMALL, "s2t-small", "torch"
        reference = torch_step(host)
    run_jax, compile_s = jax_step(host, shape)
    runs = [("jax", run_jax)] + ([(ref, reference)] if reference is not None else [])
    for _ in range(args.warmup):
        for _, run in runs:
            run()
    times = {n: [] for n, _ in runs}
    for _ in range(args.steps):
        for n, run in runs[::-1]:
            start = time.perf_counter()
            run()
            times[n].append(time.perf_counter() - start)
    if ref == "fairseq" and reference is not None:
        times[ref] = reference.seconds[-args.steps :]  # the worker's own timing
        reference.close()
    peaks = matmul_rates()
    peak = max(peaks.values())
    cfg = Speech2TextConfig(**shape)
    step_flops = flops.train_flops(cfg, args.batch, args.frames, args.target)
    ours = sum(x.size for x in jax.tree.leaves(abstract_params(cfg)))
    print(
        f"{name} fp32 ({ours / 1e6:.1f}M params), batch {args.batch} x {args.frames} frames -> "
        f"{args.target} tokens: {step_flops / 1e9:.1f} GFLOP/step; matmul peak "
        f"{peak / 1e9:.1f} GFLOP/s (jax {peaks['jax'] / 1e9:.1f}, torch {peaks['torch'] / 1e9:.1f}); "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs"
    )
    if ref == "fairseq" and reference is not None:
        print(f"  fairseq's model: {ref_params / 1e6:.1f}M params")
    for n in times:
        s = float(np.median(times[n]))
        print(
            f"  {n:7s}: {1 / s:.3f} steps/s (median {s:.3f} s/step, range "
            f"{min(times[n]):.3f}-{max(times[n]):.3f}), MFU {100 * step_flops / s / peak:.1f}%"
        )
    if len(times) == 2:
        ratio = np.asarray(times[ref]) / np.asarray(times["jax"])
        print(f"  speed-up jax vs {ref} (median of paired steps): {np.median(ratio):.2f}x "
              f"(range {ratio.min():.2f}-{ratio.max():.2f}); jax compile {compile_s:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
