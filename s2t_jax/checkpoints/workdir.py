"""The layout of a training workdir, known here only.

    <workdir>/checkpoints/<step>/   Orbax train states (orbax_io.TrainCheckpointer)
    <workdir>/model_config.json     the Speech2TextConfig the run trains
    <workdir>/train_config.json     the whole training config (its data.root / config_yaml
                                    name the fairseq data config the run read)
    <workdir>/data/                 copies of the vocabulary files, so the run stays readable
                                    when the data moves
    <workdir>/metrics.jsonl         training and validation metrics, one object per write

Training writes it (`write_run_files`, `checkpoint_dir`); export, checkpoint averaging,
evaluation and a pretrained-encoder start read it (`find_training_workdir`,
`load_train_checkpoint`, `recorded_data_config`).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import NamedTuple

import jax
import numpy as np

from s2t_jax.checkpoints.orbax_io import TrainCheckpointer

CHECKPOINT_DIR = "checkpoints"
MODEL_CONFIG_FILE = "model_config.json"
TRAIN_CONFIG_FILE = "train_config.json"
DATA_DIR = "data"
METRICS_FILE = "metrics.jsonl"


def checkpoint_dir(workdir: str) -> str:
    """Where the run's Orbax train states live."""
    return os.path.join(workdir, CHECKPOINT_DIR)


def is_training_workdir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MODEL_CONFIG_FILE)) and os.path.isdir(
        checkpoint_dir(path)
    )


def find_training_workdir(path: str) -> tuple[str, int | None] | None:
    """(workdir, step) when `path` is a training workdir (step None: the latest) or one of its
    `checkpoints/<step>`; None otherwise."""
    if is_training_workdir(path):
        return path, None
    parent, step = os.path.split(os.path.normpath(path))
    workdir, name = os.path.split(parent)
    if step.isdigit() and name == CHECKPOINT_DIR:
        if os.path.isfile(os.path.join(workdir, MODEL_CONFIG_FILE)):
            return workdir, int(step)
    return None


def write_run_files(config, workdir: str, model_config, data) -> None:
    """What a run records beside its checkpoints: model_config.json, train_config.json (the
    ml_collections `config`), and copies of the DataConfig `data`'s vocabulary files."""
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, MODEL_CONFIG_FILE), "w") as f:
        json.dump(model_config.to_dict(), f, indent=2, sort_keys=True)
    with open(os.path.join(workdir, TRAIN_CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    files = os.path.join(workdir, DATA_DIR)
    os.makedirs(files, exist_ok=True)
    for src in (data.vocab_path, data.spm_path):
        if src and os.path.isfile(src):
            shutil.copy2(src, files)


def _recorded_data(workdir: str) -> dict:
    """train_config.json's data section; raises OSError / ValueError when it is unreadable."""
    with open(os.path.join(workdir, TRAIN_CONFIG_FILE)) as f:
        return json.load(f).get("data", {})


def recorded_data_config(workdir: str) -> str | None:
    """The data config a run recorded (train_config.json's data.root/config_yaml), or None when
    the record or the file it names is missing."""
    try:
        data = _recorded_data(workdir)
    except (OSError, ValueError):
        return None
    if not data.get("root"):
        return None
    path = os.path.join(data["root"], data.get("config_yaml") or "config.yaml")
    return path if os.path.isfile(path) else None


def load_recorded_data_config(workdir: str):
    """The recorded data config, loaded (DataConfig); raises when the run names none."""
    from s2t_jax.data.data_config import DataConfig

    data = _recorded_data(workdir)
    if not data.get("root"):
        raise ValueError(f"{workdir}/{TRAIN_CONFIG_FILE} names no data.root")
    return DataConfig.load(data["root"], data.get("config_yaml") or "config.yaml")


class TrainedModel(NamedTuple):
    """The model a training checkpoint holds (numpy arrays); the optimiser and data state are
    left out."""

    config: object  # Speech2TextConfig
    params: dict  # the Speech2Text module's params
    ctc_head: dict | None  # {"kernel", "bias"} float32, when the run trains with CTC
    batch_stats: dict | None  # a Conformer's batch-norm running statistics
    step: int


def load_train_checkpoint(workdir: str, step: int | None = None) -> TrainedModel:
    """A training run's model at `step` (default: the latest checkpoint), with the config of
    `<workdir>/model_config.json`."""
    from s2t_jax.models.config import Speech2TextConfig

    config = Speech2TextConfig.from_json_file(os.path.join(workdir, MODEL_CONFIG_FILE))
    ckpt = TrainCheckpointer(checkpoint_dir(workdir), async_save=False)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{workdir}: no training checkpoints")
        state, _ = ckpt.restore(step)
    finally:
        ckpt.close()
    params = jax.tree.map(np.asarray, state["params"]["model"])
    ctc = state["params"].get("ctc")
    ctc = None if ctc is None else {k: np.asarray(v, np.float32) for k, v in ctc.items()}
    stats = state.get("batch_stats")
    stats = None if stats is None else jax.tree.map(lambda x: np.asarray(x, np.float32), stats)
    return TrainedModel(config, params, ctc, stats, int(step))
