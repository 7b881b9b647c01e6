"""fairseq's data config YAML and the target encoding it sets up."""

import numpy as np
import pytest

from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.vocab import EOS, FairseqDictionary, TargetEncoder
from s2t_jax.frontend.specaugment import POLICIES


def test_data_config_reads_fairseq_yaml(tmp_path):
    (tmp_path / "dict.txt").write_text("a 5\nb 3\n<lang:de> 1\n")
    np.savez(tmp_path / "gcmvn.npz", mean=np.zeros(80), std=np.ones(80))
    (tmp_path / "config.yaml").write_text(
        "vocab_filename: dict.txt\n"
        "bpe_tokenizer:\n  bpe: sentencepiece\n  sentencepiece_model: /gone/spm.model\n"
        "input_feat_per_channel: 80\n"
        "prepend_tgt_lang_tag: true\n"
        "global_cmvn:\n  stats_npz_path: gcmvn.npz\n"
        "specaugment:\n  freq_mask_F: 27\n  freq_mask_N: 1\n  time_mask_N: 1\n"
        "  time_mask_T: 100\n  time_mask_p: 1.0\n  time_wrap_W: 0\n"
        "transforms:\n  '*': [utterance_cmvn]\n"
        "feature_transforms:\n  _train: [global_cmvn, specaugment]\n  dev_x: [global_cmvn]\n"
    )
    cfg = DataConfig.load(tmp_path)
    assert cfg.vocab_path == str(tmp_path / "dict.txt")
    assert cfg.spm_path == str(tmp_path / "spm.model")  # absolute path gone: its name in root
    # fairseq: the deprecated `transforms` entries first, then `feature_transforms`
    assert cfg.transforms("train", True) == ["utterance_cmvn", "global_cmvn", "specaugment"]
    assert cfg.transforms("dev", False) == ["utterance_cmvn"]
    assert cfg.transforms("dev_x", False) == ["utterance_cmvn", "global_cmvn"]
    assert cfg.cmvn("train", True)[1] == {
        "kind": "global",
        "stats_npz_path": str(tmp_path / "gcmvn.npz"),
    }
    assert [c["kind"] for c in cfg.cmvn("dev", False)] == ["utterance"]
    assert cfg.specaugment("train", True) == POLICIES["lb"]
    assert cfg.specaugment("dev", False) is None
    assert cfg.prepend_tgt_lang_tag


def test_target_encoder_adds_eos_and_language_tag(tmp_path):
    (tmp_path / "dict.txt").write_text("hello 1\nworld 1\n<lang:de> 1\n")
    d = FairseqDictionary.load(tmp_path / "dict.txt")
    assert len(d) == 7 and d.index["hello"] == 4 and d.index["<lang:de>"] == 6
    enc = TargetEncoder(str(tmp_path / "dict.txt"), None, prepend_tgt_lang_tag=True)
    ids = enc.encode("hello there world", "de")
    assert ids.tolist() == [6, 4, 3, 5, EOS]  # tag, hello, <unk>, world, eos
    assert enc.decode(ids) == "hello <unk> world"
    with pytest.raises(ValueError, match="lang:fr"):
        enc.encode("hello", "fr")
