"""Any checkpoint path -> a model: one of our model dirs, a transformers dir, a fairseq `.pt`,
or a training workdir (or one of its `checkpoints/<step>`).

What the model classes' `from_pretrained` reads, plus training workdirs, which hold train
states rather than a model; evaluation takes all of them, and records which kind it was.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from s2t_jax.checkpoints.workdir import find_training_workdir, load_train_checkpoint
from s2t_jax.modeling import Speech2TextForConditionalGeneration


@dataclasses.dataclass
class LoadedCheckpoint:
    model: object  # Speech2TextForConditionalGeneration
    kind: str  # "model_dir", "fairseq" or "training"
    step: int | None = None  # training checkpoints only
    workdir: str | None = None  # training checkpoints only


def load_checkpoint(path: str | os.PathLike, dtype: str | None = None) -> LoadedCheckpoint:
    """A model dir (ours or transformers'), a fairseq .pt, or a training workdir / checkpoint."""
    path = os.path.abspath(os.fspath(path))
    training = find_training_workdir(path) if os.path.isdir(path) else None
    if training is not None:
        workdir, step = training
        trained = load_train_checkpoint(workdir, step)
        config = trained.config
        if dtype is not None:
            config = config.replace(dtype=np.dtype(dtype).name)
        model = Speech2TextForConditionalGeneration(config, trained.params)
        model.ctc_head = trained.ctc_head
        if trained.batch_stats is not None:
            model.batch_stats = trained.batch_stats
        return LoadedCheckpoint(model, "training", step=trained.step, workdir=workdir)
    model = Speech2TextForConditionalGeneration.from_pretrained(path, dtype=dtype)
    return LoadedCheckpoint(model, "model_dir" if os.path.isdir(path) else "fairseq")
