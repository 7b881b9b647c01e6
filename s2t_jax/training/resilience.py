"""What keeps a long run alive: preemption, bad checkpoints, full disks and non-finite losses.

* `Preemption`: SIGTERM (the scheduler's notice) makes the loop save at the current step and
  return normally, so the process exits 0 and a restart resumes there. One process: our own
  signal handler. Several: JAX's preemption sync point (the coordination service catches the
  signal and all processes agree on one step to save at; see `reached`).
* `fingerprint`: a 32-bit checksum of the train state computed on device and stored in the
  checkpoint's metadata. Orbax detects missing and truncated files, but not flipped bytes
  (zarr chunks carry no checksum); the fingerprint catches those on restore.
* `restore_latest_good`: restores the newest checkpoint that reads back and matches its
  fingerprint; newer bad ones are logged and moved aside to `<checkpoints>.corrupt/`.
* `check_writable` / `CheckpointWriteError`: a workdir that cannot be written fails at start,
  and a save that fails (disk full, permissions) stops the run with a message saying which
  checkpoints are still good. Orbax writes each step to a temporary directory and renames it
  when complete, so a failed or killed save never damages an earlier checkpoint.
* `NonFiniteLoss`: raised under config.nan_policy='stop', naming the step and utterances.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import threading
import time

import jax
import jax.numpy as jnp
from absl import logging
from jax import lax

NAN_POLICIES = ("skip", "stop")


# --------------------------------------------------------------------------------------------
# Preemption
# --------------------------------------------------------------------------------------------


class Preemption:
    """Turns SIGTERM into "save now and stop" at the next step boundary.

    With several processes the signal may reach them at different steps, so the decision is
    JAX's preemption sync point: every process calls `reached(step)` each step and they all
    get True at the same step. Installing a Python handler there would replace JAX's, so it is
    only done for a single process.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        self.requested = False
        self._previous = {}
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        del frame
        if not self.requested:
            logging.warning("received signal %d: will save a checkpoint and stop", signum)
        self.requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils

        try:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        except RuntimeError:  # preemption service off (jax_enable_preemption_service=False)
            return False

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


# --------------------------------------------------------------------------------------------
# State fingerprint
# --------------------------------------------------------------------------------------------


def _words(x):
    """An array's raw bits as uint32 values of its shape (8-byte types fold their halves)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 4:
        return lax.bitcast_convert_type(x, jnp.uint32)
    if size in (1, 2):
        return lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size]).astype(jnp.uint32)
    if size == 8:
        halves = lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
        return halves[..., 0] * jnp.uint32(0x9E3779B1) + halves[..., 1]
    raise TypeError(f"cannot fingerprint dtype {x.dtype}")


def _leaf_sum(x):
    """sum_i word_i * (2i + 1) mod 2**32 over flat positions i: any single changed word (or
    two swapped) changes it. Built from iotas rather than a reshape, so a sharded leaf stays
    sharded and the sum is a local reduce plus a scalar all-reduce."""
    w = _words(x)
    index = jnp.zeros(w.shape, jnp.uint32)
    stride = 1
    for d in reversed(range(w.ndim)):
        index = index + lax.broadcasted_iota(jnp.uint32, w.shape, d) * jnp.uint32(stride)
        stride *= w.shape[d]
    return jnp.sum(w * (2 * index + 1), dtype=jnp.uint32)


@jax.jit
def _fingerprint(tree):
    total = jnp.uint32(0)
    for k, leaf in enumerate(jax.tree.leaves(tree)):
        total = total * jnp.uint32(16777619) + _leaf_sum(leaf) * jnp.uint32(2 * k + 1)
    return total


def fingerprint(tree) -> int:
    """A 32-bit checksum of every bit of a pytree of arrays (same value for any sharding)."""
    return int(jax.device_get(_fingerprint(tree)))


# --------------------------------------------------------------------------------------------
# Restore with fallback
# --------------------------------------------------------------------------------------------


class CorruptCheckpoint(ValueError):
    pass


def restore_latest_good(ckpt, abstract_state):
    """-> (state, meta, step) of the newest checkpoint that restores and verifies, or None when
    there are none. Bad newer ones are logged and moved to `<checkpoints>.corrupt/<step>`;
    if every checkpoint is bad this raises rather than silently starting from scratch.
    """
    steps = sorted(ckpt.all_steps(), reverse=True)
    bad = []
    for step in steps:
        try:
            state, meta = ckpt.restore(step, abstract_state)
            want = meta.get("fingerprint")
            if want is not None:
                got = fingerprint(state)
                if got != int(want):
                    raise CorruptCheckpoint(f"fingerprint {got} != saved {want}")
        except Exception as e:  # noqa: BLE001 - any failure to read back means "not usable"
            logging.warning(
                "checkpoint step %d is unreadable or corrupt (%s: %s); trying the previous one",
                step,
                type(e).__name__,
                str(e).splitlines()[0][:300] if str(e) else "",
            )
            bad.append((step, e))
            continue
        if bad:
            logging.warning(
                "falling back to checkpoint step %d; moved bad checkpoints %s aside to %s",
                step,
                [s for s, _ in bad],
                _quarantine(ckpt, [s for s, _ in bad]),
            )
        return state, meta, step
    if bad:
        raise RuntimeError(
            f"{ckpt.directory}: no usable checkpoint; every one failed to restore: "
            + "; ".join(f"step {s}: {type(e).__name__}: {e}" for s, e in bad)
        ) from bad[0][1]
    return None


def _quarantine(ckpt, steps) -> str:
    """Moves step directories out of Orbax's view (so the steps can be saved again)."""
    target = ckpt.directory.rstrip("/") + ".corrupt"
    if jax.process_index() == 0:
        os.makedirs(target, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for step in steps:
            src = os.path.join(ckpt.directory, str(step))
            if os.path.exists(src):
                shutil.move(src, os.path.join(target, f"{step}.{stamp}"))
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("s2t_jax quarantine checkpoints")
    ckpt.manager.reload()
    return target


# --------------------------------------------------------------------------------------------
# Disk
# --------------------------------------------------------------------------------------------


class WorkdirError(OSError):
    pass


class CheckpointWriteError(OSError):
    pass


def check_writable(path: str) -> None:
    """Creates `path` and writes + removes a probe file; raises WorkdirError saying why not."""
    probe = os.path.join(path, f".write_probe.{jax.process_index()}.{os.getpid()}")
    try:
        os.makedirs(path, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise WorkdirError(e.errno, f"workdir {path} is not writable: {e.strerror or e}") from e
    free = shutil.disk_usage(path).free
    if free < 1 << 30:
        logging.warning("workdir %s has only %.1f MiB free", path, free / 2**20)


def save_error(e: OSError, step: int, directory: str, good_steps) -> CheckpointWriteError:
    """A clear error for a failed checkpoint write (raise it from the original)."""
    why = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EACCES: "permission denied",
        errno.EROFS: "the file system is read-only",
    }.get(e.errno, "an I/O error")
    good = sorted(good_steps)
    return CheckpointWriteError(
        e.errno,
        f"could not write the checkpoint of step {step} under {directory}: {why} ({e}). "
        f"Checkpoints already written are intact (steps {good}); free space or fix the "
        f"directory, then rerun to resume from step {good[-1] if good else 0}.",
    )


# --------------------------------------------------------------------------------------------
# Non-finite losses
# --------------------------------------------------------------------------------------------


class NonFiniteLoss(FloatingPointError):
    pass


def non_finite_error(step: int, ids: list[str], metrics: dict) -> NonFiniteLoss:
    shown = ", ".join(ids[:20]) + (f" ... ({len(ids)} in all)" if len(ids) > 20 else "")
    return NonFiniteLoss(
        f"non-finite loss or gradient at update {step} (loss={float(metrics['loss'])}, "
        f"grad_norm={float(metrics['grad_norm'])}); the update was not applied. Utterances of "
        f"the batch on process {jax.process_index()}: {shown or '(none)'}. "
        f"Set config.nan_policy='skip' to skip such updates instead."
    )
