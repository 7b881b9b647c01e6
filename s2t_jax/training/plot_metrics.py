"""Plots training loss and dev WER against step from a workdir's metrics.jsonl, to a PNG.

python -m s2t_jax.plot_metrics WORKDIR [--out WORKDIR/training_curves.png]
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")  # no display: write files only
import matplotlib.pyplot as plt  # noqa: E402

from s2t_jax.checkpoints.workdir import METRICS_FILE
from s2t_jax.training.metrics_writer import read_metrics


def plot_training(workdir: str, out: str | None = None) -> str:
    if not os.path.exists(os.path.join(workdir, METRICS_FILE)):
        raise FileNotFoundError(f"{workdir}: no {METRICS_FILE} (is it a training workdir?)")
    train = [r for r in read_metrics(workdir, "train") if "loss" in r]
    valid = [r for r in read_metrics(workdir, "valid") if "wer" in r]
    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=120)
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    ax_loss.set_xlabel("update")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    if valid:
        ax_wer = ax_loss.twinx()
        ax_wer.plot([r["step"] for r in valid], [r["wer"] for r in valid], "o-", color="tab:red")
        ax_wer.set_ylabel("dev WER (%)", color="tab:red")
        ax_wer.set_ylim(bottom=0)
    ax_loss.set_title(os.path.basename(os.path.abspath(workdir)))
    fig.tight_layout()
    out = out or os.path.join(workdir, "training_curves.png")
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    print(f"wrote {plot_training(args.workdir, args.out)}")
