"""Train Speech2Text: `python train.py --config configs/librispeech.py:small --workdir DIR`.

Any config value can be overridden (`--config.lr=1e-3`); the config is locked, so a typo in a
key is an error. Rerunning on the same workdir resumes from its latest good checkpoint.

Several processes (multi-host): TPU pod slices and Slurm jobs need no extra flags; elsewhere
give every process --coordinator_address, --num_processes and its --process_id (or the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables). See docs/scaling.md.
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from s2t_jax.parallel import (
        distributed,  # first JAX call of the run: before any device is touched
    )

    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    if _CONFIG.value.get("task") == "lm":  # configs/lm.py: a language model for fusion
        from s2t_jax.training.lm_trainer import train_lm

        train_lm(_CONFIG.value, _WORKDIR.value)
        return
    from s2t_jax.training.trainer import train_and_evaluate

    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
