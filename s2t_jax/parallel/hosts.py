"""Host (numpy) values across processes: every process gets the whole picture.

Loaders, skip reasons, counts and generated ids live on each process's host; evaluation and
validation need the totals or the global rows on every process (each then writes or logs the
same numbers). With one process these are identities, so single-host runs pay nothing.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils


def gather_rows(tree):
    """Per-process numpy arrays (rows first), or global jax.Arrays -> the global rows as numpy,
    on every process (processes' blocks concatenated in process order)."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def broadcast_from_process_0(x: np.ndarray) -> np.ndarray:
    """Process 0's host array on every process (what it alone read, such as a resume state)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    return np.asarray(multihost_utils.broadcast_one_to_all(x))


def process_sum(values: dict) -> dict:
    """Sums a flat dict of host numbers over processes (every process gets the totals)."""
    if jax.process_count() == 1:
        return dict(values)
    keys = sorted(values)
    local = np.asarray([float(values[k]) for k in keys], np.float64)
    total = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, len(keys)).sum(0)
    return dict(zip(keys, total.tolist()))
