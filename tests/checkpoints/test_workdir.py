"""A training workdir as training writes it is what export and evaluation find and read."""

import json

import ml_collections

from s2t_jax.checkpoints import workdir as layout
from s2t_jax.models.config import Speech2TextConfig


class _Data:  # what write_run_files reads of a DataConfig
    def __init__(self, vocab_path, spm_path):
        self.vocab_path, self.spm_path = vocab_path, spm_path


def test_written_run_files_are_found_and_read_back(tmp_path):
    data_root = tmp_path / "data_root"
    data_root.mkdir()
    (data_root / "config.yaml").write_text("vocab_filename: dict.txt\n")
    (data_root / "dict.txt").write_text("a 1\n")
    config = ml_collections.ConfigDict({"data": {"root": str(data_root), "config_yaml": ""}})
    run = tmp_path / "run"
    model_config = Speech2TextConfig(vocab_size=8)
    layout.write_run_files(config, str(run), model_config, _Data(str(data_root / "dict.txt"), None))
    assert (run / layout.DATA_DIR / "dict.txt").read_text() == "a 1\n"
    assert json.loads((run / layout.MODEL_CONFIG_FILE).read_text())["vocab_size"] == 8
    assert layout.recorded_data_config(str(run)) == str(data_root / "config.yaml")
    assert layout.load_recorded_data_config(str(run)).root == str(data_root)

    assert not layout.is_training_workdir(str(run))  # no checkpoints yet
    assert layout.find_training_workdir(str(run)) is None
    (run / layout.CHECKPOINT_DIR / "12").mkdir(parents=True)
    assert layout.is_training_workdir(str(run))
    assert layout.find_training_workdir(str(run)) == (str(run), None)
    step_dir = layout.checkpoint_dir(str(run)) + "/12"
    assert layout.find_training_workdir(step_dir) == (str(run), 12)
    assert layout.find_training_workdir(str(tmp_path)) is None


def test_recorded_data_config_is_none_without_a_record(tmp_path):
    assert layout.recorded_data_config(str(tmp_path)) is None
    (tmp_path / layout.TRAIN_CONFIG_FILE).write_text(json.dumps({"data": {"root": ""}}))
    assert layout.recorded_data_config(str(tmp_path)) is None
