"""A model's CTC head travels with it: our format keeps it (ctc/), a fairseq checkpoint's
encoder.ctc_proj becomes it, transformers' format leaves it out and says so."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from s2t_jax import Speech2TextConfig, Speech2TextForConditionalGeneration
from s2t_jax.checkpoints.convert import convert_checkpoint
from tests.hf_models import TINY

FAIRSEQ_CTC = (
    Path(__file__).resolve().parents[1] / "assets" / "fairseq" / "transformer_untied_ctc.pt"
)


def _head(config, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "kernel": rng.normal(size=(config.d_model, config.vocab_size)).astype(np.float32),
        "bias": rng.normal(size=(config.vocab_size,)).astype(np.float32),
    }


def test_our_format_keeps_the_head_and_transformers_leaves_it_out(tmp_path, caplog):
    config = Speech2TextConfig(**TINY)
    model = Speech2TextForConditionalGeneration(config)
    assert (
        Speech2TextForConditionalGeneration.from_pretrained(_saved(model, tmp_path / "a")).ctc_head
        is None
    )
    model.ctc_head = _head(config)
    again = Speech2TextForConditionalGeneration.from_pretrained(_saved(model, tmp_path / "b"))
    for k in ("kernel", "bias"):
        np.testing.assert_array_equal(again.ctc_head[k], model.ctc_head[k])
    model.ctc_head = None  # saving over a directory with a head removes the stale head
    assert (
        Speech2TextForConditionalGeneration.from_pretrained(_saved(model, tmp_path / "b")).ctc_head
        is None
    )
    model.ctc_head = _head(config)
    with caplog.at_level(logging.WARNING):
        model.save_pretrained(tmp_path / "hf", transformers_format=True)
    assert "no CTC head" in caplog.text and not (tmp_path / "hf" / "ctc").exists()


def test_a_head_that_disagrees_with_the_config_is_refused(tmp_path):
    config = Speech2TextConfig(**TINY)
    model = Speech2TextForConditionalGeneration(config)
    model.ctc_head = _head(config.replace(vocab_size=config.vocab_size + 1))
    path = _saved(model, tmp_path / "m")
    with pytest.raises(ValueError, match="CTC head shapes"):
        Speech2TextForConditionalGeneration.from_pretrained(path)


def test_fairseq_ctc_proj_becomes_the_head_and_survives_conversion(tmp_path):
    model = Speech2TextForConditionalGeneration.from_pretrained(FAIRSEQ_CTC)
    assert model.ctc_head["kernel"].shape == (model.config.d_model, model.config.vocab_size)
    convert_checkpoint(str(FAIRSEQ_CTC), str(tmp_path / "ours"))
    again = Speech2TextForConditionalGeneration.from_pretrained(tmp_path / "ours")
    np.testing.assert_array_equal(again.ctc_head["kernel"], model.ctc_head["kernel"])


def _saved(model, path):
    model.save_pretrained(path)
    return path
