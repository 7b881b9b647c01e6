"""What the loop reports about training: windowed train metrics, and non-finite updates.

The step returns per-batch sums on device; the loop fetches them once per log interval (one
host sync) and this module turns them into fairseq's numbers plus throughput and MFU over the
window. Time the loop spends outside the step (compiles, evals, saves) is counted as paused and
left out of step time.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import logging

from s2t_jax.training import resilience, validation

SUM_KEYS = (
    "loss",
    "nll_loss",
    "n_correct",
    "n_total",
    "ntokens",
    "nsentences",
    "frames",
    "ctc_loss",
)


def new_window() -> dict:
    """A fresh throughput window: model FLOPs, bad audio rows, wall-clock start, updates, and
    the seconds paused (outside the step) since the start."""
    return {"flops": 0.0, "bad": 0, "start": time.perf_counter(), "updates": 0, "paused": 0.0}


def data_metrics(split, loader) -> dict:
    """The train split as the loop sees it: utterances kept, skipped (by reason), epoch size."""
    return {f"train_skipped_{why}": n for why, n in split.skipped.items()} | {
        "train_utterances": len(split),
        "epoch_batches": loader.plan.batches_per_epoch,
    }


def check_finite(fetched, where, policy: str, ids) -> int:
    """Reports non-finite micro-batches (their update and utterances); -> updates skipped.

    The step never applies such an update; "stop" makes it an error, "skip" a warning.
    """
    for m, (update, rows) in zip(fetched, where):
        if float(m["finite"]):
            continue
        names = [ids[i] for i in rows if i >= 0]
        if policy == "stop":
            raise resilience.non_finite_error(update, names, m)
        logging.warning(
            "update %d: non-finite loss or gradient (loss %s, grad_norm %s), skipped; "
            "utterances of the batch on process %d: %s",
            update,
            float(m["loss"]),
            float(m["grad_norm"]),
            jax.process_index(),
            ", ".join(names[:20]),
        )
    return int(sum(float(m["skipped"]) for m in fetched))


def log_train(writer, step, fetched, window, peak, n_devices, loader) -> dict:
    """Aggregates the window's per-batch sums (fetched from device) and writes train metrics.

    Non-finite batches are left out of the sums (they are counted as skipped_updates). Starts
    a new window.
    """
    skipped = float(sum(m["skipped"] for m in fetched))
    fetched = [m for m in fetched if float(m["finite"])] or fetched
    sums = {k: float(sum(m[k] for m in fetched)) for k in SUM_KEYS if k in fetched[0]}
    updates = [m for m in fetched if float(m["updated"]) and not float(m["skipped"])]
    elapsed = max(time.perf_counter() - window["start"] - window["paused"], 1e-9)
    out = validation.summarize(sums)
    out.update(
        grad_norm=float(np.mean([m["grad_norm"] for m in updates])) if updates else 0.0,
        lr=float(fetched[-1]["lr"]),
        ntokens=sums["ntokens"] / max(len(updates), 1),
        nsentences=sums["nsentences"] / max(len(updates), 1),
        frames_per_s=sums["frames"] / elapsed,
        utt_per_s=sums["nsentences"] / elapsed,
        step_time=elapsed / max(window["updates"], 1),
        bad_audio=window["bad"],
        epoch=loader.epoch_of(),
        skipped_updates=skipped,
    )
    if peak:
        out["mfu"] = 100.0 * window["flops"] / elapsed / (peak * n_devices)
    writer.write(step, "train", out)
    window.update(new_window())
    return out
