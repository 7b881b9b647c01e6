"""Train-step time of configs/demo.py's Transformer and its Conformer variant, in turns.

What sets `configs/demo.py:conformer`'s update budget (the same training time as the
Transformer's 2,400 updates): both steps jitted on one demo-sized batch (16 utterances x 480
frames -> 40 tokens, vocabulary 260, CTC weight 0.5 as the demo trains), run alternately so a
shared machine's load hits both alike; medians and ranges of the per-step seconds.

    python bench/demo_step_ratio.py [--steps 8]
"""

import argparse
import functools
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_step import make_batch  # noqa: E402

from configs import demo  # noqa: E402
from s2t_jax.models.params import abstract_params, count_params  # noqa: E402
from s2t_jax.training import train_state  # noqa: E402
from s2t_jax.training.task import Task, model_config_from  # noqa: E402


def compiled_step(arg, batch):
    config = demo.get_config(arg)
    model_config = model_config_from(config, 260)
    task = Task.from_config(config, model_config)
    state = [jax.jit(functools.partial(train_state.init_state, task))(jax.random.key(0))]
    step = jax.jit(functools.partial(train_state.train_step, task), donate_argnums=(0,))
    rng = jax.random.key(1)
    start = time.perf_counter()
    compiled = step.lower(state[0], batch, rng).compile()
    seconds = time.perf_counter() - start

    def run():
        state[0], metrics = compiled(state[0], batch, rng)
        jax.block_until_ready(metrics["loss"])

    run()
    return run, seconds, count_params(abstract_params(model_config))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    train_state.use_unrolled_threefry_on_cpu()  # as train.py does on CPU
    batch = jax.device_put(make_batch(16, 480, 40, 260))
    runs = {name: compiled_step(arg, batch) for name, arg in (("transformer", None),
                                                              ("conformer", "conformer"))}  # fmt: skip
    times = {name: [] for name in runs}
    for _ in range(args.steps):
        for name, (run, _, _) in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    for name, (_, compile_s, params) in runs.items():
        t = times[name]
        print(f"{name}: {params / 1e6:.2f}M params, median {np.median(t):.3f} s/step (range "
              f"{min(t):.3f}-{max(t):.3f}), compile {compile_s:.1f} s")  # fmt: skip
    ratio = np.asarray(times["conformer"]) / np.asarray(times["transformer"])
    print(f"conformer / transformer: median {np.median(ratio):.2f} (range {ratio.min():.2f}-"
          f"{ratio.max():.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
