"""One XLA:CPU device per core, so decoding can use every core of a CPU host.

Why: XLA:CPU runs the small operations of a decoder step (batched matrix-vector products
against the cross-attention K/V, [rows, 256] x [256, 2048] FFN matmuls) on one thread, so a
step is bound by one core's memory bandwidth however many cores the host has. With one device
per core, `generate` splits the batch over the devices (each runs its own search on its rows,
see decoding/placement.py) and every core streams its own share of the cache. Measured on a 2-core
host, s2t-small, 32 utterances: a forced-length greedy search took 4.0 s instead of 6.0 s, and
beam 5 15.8 s instead of 24.6 s, with the same ids.

This must run before JAX creates its CPU backend (before the first array is made), because
the device count is fixed then. It changes nothing on GPU or TPU hosts.
"""

from __future__ import annotations

import os
import re

import jax


def cpu_core_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def use_cpu_cores(count: int | None = None) -> int:
    """Asks XLA:CPU for `count` devices (default: one per available core).

    Returns the count that will be in effect. Raises RuntimeError if JAX's backends already
    exist with another count (call this first thing in a program, before any JAX array is
    made); an explicit XLA_FLAGS --xla_force_host_platform_device_count wins and is left alone.
    """
    count = cpu_core_count() if count is None else int(count)
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    forced = re.search(
        r"xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", "")
    )
    if forced:
        return int(forced.group(1))
    if jax.config.jax_num_cpu_devices == count:
        return count
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as e:
        raise RuntimeError(
            f"use_cpu_cores({count}) must run before JAX makes its first array: the CPU "
            "backend already exists with its device count"
        ) from e
    return count
