"""Train Speech2Text: `python train.py --config configs/librispeech.py:small --workdir DIR`.

Any config value can be overridden (`--config.lr=1e-3`); the config is locked, so a typo in a
key is an error. Rerunning on the same workdir resumes from its latest checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

from s2t_jax.trainer import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and logs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
