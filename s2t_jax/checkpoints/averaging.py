"""Average the model weights of the last N training checkpoints (fairseq's average_checkpoints).

fairseq's S2T recipes evaluate the mean of the last 10 checkpoints' weights. This reads the
`params["model"]` subtree of the chosen steps of a training workdir (and a Conformer's
batch-norm running statistics, which fairseq's script averages with the weights), averages in
float64 (then casts back), and writes one of our model directories (config.json + Orbax params/) that
`Speech2TextForConditionalGeneration.from_pretrained` and convert_checkpoint.py read.

    python -m s2t_jax.average_checkpoints --workdir ws/ls_s --num 10 --output ws/ls_s/avg_last_10
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from s2t_jax.checkpoints.model_dir import save_model_dir
from s2t_jax.checkpoints.orbax_io import TrainCheckpointer
from s2t_jax.checkpoints.workdir import checkpoint_dir, load_train_checkpoint


def average_checkpoints(workdir: str, num: int = 10, steps=None):
    """-> (Speech2TextConfig, averaged params, averaged batch_stats or None, steps used).
    Default: the last `num` steps."""
    ckpt = TrainCheckpointer(checkpoint_dir(workdir), async_save=False)
    try:
        available = ckpt.all_steps()
    finally:
        ckpt.close()
    if steps is None:
        steps = available[-num:]
    missing = sorted(set(steps) - set(available))
    if missing or not steps:
        raise ValueError(f"{workdir}: steps {missing or steps} not among checkpoints {available}")
    total, config = None, None
    for step in steps:
        trained = load_train_checkpoint(workdir, step)
        config = trained.config
        weights = {"params": trained.params, "batch_stats": trained.batch_stats}
        weights = jax.tree.map(lambda x: np.asarray(x, np.float64), weights)
        total = weights if total is None else jax.tree.map(np.add, total, weights)
    mean = jax.tree.map(lambda x: (x / len(steps)).astype(np.float32), total)
    return config, mean["params"], mean["batch_stats"], list(steps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="training workdir (has checkpoints/)")
    parser.add_argument("--num", type=int, default=10, help="average the last NUM checkpoints")
    parser.add_argument("--steps", default="", help="comma-separated steps instead of --num")
    parser.add_argument("--output", required=True, help="model directory to write")
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",") if s] or None
    config, params, batch_stats, used = average_checkpoints(args.workdir, args.num, steps)
    save_model_dir(args.output, config, params, batch_stats=batch_stats)
    print(f"averaged steps {used} -> {args.output}")
