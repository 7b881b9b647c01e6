"""Training metrics to the console, TensorBoard event files and a JSON-lines file.

TensorBoard files are written with tensorboardX (a small pure-Python writer: protobuf + numpy,
no TensorFlow). `metrics.jsonl` holds the same numbers, one object per write, for scripts and
tests. Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import os

from absl import logging

from s2t_jax.checkpoints.workdir import METRICS_FILE


def _fmt(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4g}"


class MetricWriter:
    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a", encoding="utf-8")
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                logging.warning("tensorboardX is not installed: no TensorBoard event files")

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        """Writes scalars `split/name` at `step` and logs one console line."""
        if not self.enabled:
            return
        metrics = {k: float(v) for k, v in metrics.items()}
        logging.info(
            "[%s] step %d | %s",
            split,
            step,
            " | ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()),
        )
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{split}/{k}", v, step)
        self._jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None


def read_metrics(workdir: str, split: str | None = None) -> list[dict]:
    """The rows of `metrics.jsonl` (optionally of one split); a torn last line, from a run
    killed mid-write, is skipped."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [r for r in rows if split is None or r.get("split") == split]
