"""Checkpoints of a run: saved with what resuming needs, restored from the newest good one.

A checkpoint holds the train state plus its meta: the data position (`Loader.get_state`), the
run's seed and a fingerprint of the state, so a restart continues bit-exactly and a torn save
is caught on restore (resilience.restore_latest_good). Saves are asynchronous; a failed
background write surfaces at the next save (or at close) as an error that names the step and
the checkpoints that are intact.
"""

from __future__ import annotations

import os

from absl import logging

from s2t_jax.checkpoints.orbax_io import TrainCheckpointer
from s2t_jax.checkpoints.workdir import checkpoint_dir
from s2t_jax.training import resilience


class RunCheckpoints:
    """The run's TrainCheckpointer, with save errors that say what is still good."""

    def __init__(self, config, workdir: str):
        self.ckpt = TrainCheckpointer(
            checkpoint_dir(workdir),
            keep_last=config.keep_last_checkpoints,
            keep_best=config.keep_best_checkpoints,
            best_metric=config.best_checkpoint_metric,
            best_mode="max" if config.maximize_best_checkpoint_metric else "min",
            async_save=config.async_checkpointing,
            cleanup_tmp=True,
        )
        self.in_flight = None  # the step of the async save that may still be writing

    def restore(self, target):
        """-> (state, meta, step) of the newest good checkpoint, or None (see resilience)."""
        return resilience.restore_latest_good(self.ckpt, target)

    def latest_step(self):
        return self.ckpt.latest_step()

    def good_steps(self) -> list[int]:
        directory = self.ckpt.directory
        return [s for s in self.ckpt.all_steps() if os.path.isdir(os.path.join(directory, str(s)))]

    def wait(self) -> None:
        try:
            self.ckpt.wait()
        except OSError as e:  # the background write failed: disk full, permissions, ...
            raise resilience.save_error(
                e, self.in_flight, self.ckpt.directory, self.good_steps()
            ) from e

    def save(self, step: int, state, loader, seed: int, metrics=None) -> None:
        """Saves `state` at `step` with the data position of `loader` and the run's seed."""
        self.wait()
        self.in_flight = step
        meta = {
            "data": loader.get_state(),
            "seed": seed,
            "step": step,
            "fingerprint": resilience.fingerprint(state),
        }
        try:
            self.ckpt.save(step, state, meta, metrics)
        except OSError as e:
            raise resilience.save_error(e, step, self.ckpt.directory, self.good_steps()) from e

    def close(self) -> None:
        """Waits for the last save (raising its error), then closes the manager."""
        try:
            self.wait()
        finally:
            try:
                self.ckpt.close()
            except OSError as e:  # the failed save, already reported by wait
                logging.warning("closing the checkpoint manager: %s", e)
