"""The one place that starts multi-host JAX (`jax.distributed.initialize`).

Call `initialize()` first thing in an entry point, before any other JAX call:
  - TPU pod slices: no arguments; JAX discovers the slice from the TPU metadata.
  - GPU clusters: coordinator address, process count and id from arguments, or from
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or from Slurm's variables
    (SLURM_NTASKS, SLURM_PROCID, SLURM_STEP_NODELIST), which JAX reads itself.
  - CPU (tests, or a cluster of CPU hosts): the same arguments, with gloo collectives.
A single process skips it, so the same train.py runs on a laptop unchanged.
"""

from __future__ import annotations

import logging
import os

import jax

_started = False


def _env_int(name):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: list[int] | None = None,
    platform: str | None = None,
) -> bool:
    """Starts jax.distributed when this is one process of several. Returns True if it did."""
    global _started
    if _started:
        return True
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")
    platform = platform or os.environ.get("JAX_PLATFORMS", "").split(",")[0] or None
    on_tpu_pod = bool(os.environ.get("TPU_WORKER_HOSTNAMES", "").count(","))
    in_slurm_job = (_env_int("SLURM_NTASKS") or 1) > 1

    if num_processes is not None and num_processes > 1 or coordinator_address:
        if platform == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
        )
    elif on_tpu_pod or in_slurm_job:
        jax.distributed.initialize()  # cluster auto-detection (TPU metadata, Slurm)
    else:
        return False
    _started = True
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def is_main_process() -> bool:
    """Only process 0 writes logs, metrics and human-facing files."""
    return jax.process_index() == 0
