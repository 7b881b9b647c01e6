"""Two or more training runs on one plot: dev loss and dev WER against training time.

    python bench/compare_runs.py --out docs/demo_conformer.png \
        transformer=demo_workdir/train conformer=demo_workdir/conformer

Training time is the sum of the logged step times (each train row's mean step time times the
updates it covers), so validation, checkpointing and compiles are left out. Runs made under
different loads of a shared machine compare better with `--seconds_per_update NAME=S` for
each run: then time is updates x S, S measured side by side in one quiet run
(bench/demo_step_ratio.py). Prints one row per run: parameters,
updates, median s/update, training minutes, and the last dev loss and WER.
"""

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from s2t_jax.models.config import Speech2TextConfig  # noqa: E402
from s2t_jax.models.params import abstract_params, count_params  # noqa: E402
from s2t_jax.training.metrics_writer import read_metrics  # noqa: E402


def train_seconds(train_rows) -> dict:
    """update -> cumulative seconds of training steps up to it."""
    out, total, last = {0: 0.0}, 0.0, 0
    for row in train_rows:
        total += row["step_time"] * (row["step"] - last)
        last = row["step"]
        out[last] = total
    return out


def at(clock: dict, step: int) -> float:
    steps = sorted(clock)
    return float(np.interp(step, steps, [clock[s] for s in steps]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="name=workdir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds_per_update", nargs="*", default=[], help="NAME=seconds")
    args = parser.parse_args()
    rates = {k: float(v) for k, v in (x.split("=", 1) for x in args.seconds_per_update)}
    fig, (ax_loss, ax_wer) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for spec in args.runs:
        name, workdir = spec.split("=", 1)
        train = [r for r in read_metrics(workdir, "train") if "step_time" in r]
        valid = [r for r in read_metrics(workdir, "valid") if "wer" in r]
        clock = train_seconds(train)
        if name in rates:
            clock = {step: step * rates[name] for step in clock}
        minutes = [at(clock, r["step"]) / 60 for r in valid]
        ax_loss.plot(minutes, [r["loss"] for r in valid], "o-", label=name)
        ax_wer.plot(minutes, [r["wer"] for r in valid], "o-", label=name)
        config = Speech2TextConfig.from_json_file(os.path.join(workdir, "model_config.json"))
        params = count_params(abstract_params(config))
        print(
            f"{name}: {params / 1e6:.2f}M params, {train[-1]['step']} updates, median "
            f"{np.median([r['step_time'] for r in train]):.3f} s/update, "
            f"{clock[train[-1]['step']] / 60:.1f} min of steps; last dev loss "
            f"{valid[-1]['loss']:.3f}, dev WER {valid[-1]['wer']:.2f} (greedy, "
            f"{int(valid[-1]['wer_words'])} words)"
        )
    for ax, label in ((ax_loss, "dev loss"), (ax_wer, "dev WER (%, greedy)")):
        ax.set_xlabel("training minutes" + (" (updates x quiet s/update)" if rates else ""))
        ax.set_ylabel(label)
        ax.legend()
    ax_wer.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
