"""The language model for shallow fusion: fairseq's own transformer_lm checkpoints load and give
fairseq's log-probabilities (fixtures written by fairseq 0.12.2 itself, with
tools/make_fairseq_lm_fixture.py); the cached step equals the teacher-forced pass; our format
round-trips; what we cannot load is refused by name."""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from s2t_jax.checkpoints.lm import load_lm, save_lm
from s2t_jax.models.lm import LMConfig, TransformerLM

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "fairseq"
TOL = 1e-5  # fp32, max abs difference of log-probabilities


@pytest.mark.parametrize("name", ["untied", "tied"])
def test_fairseq_transformer_lm_matches_fairseq(name):
    config, params = load_lm(str(ASSETS / f"transformer_lm_{name}.pt"))
    ref = np.load(ASSETS / f"transformer_lm_{name}.npz")
    assert config.share_input_output_embed == (name == "tied")
    assert config.final_layer_norm == (name == "untied")
    logits = TransformerLM(config).apply({"params": params}, jnp.asarray(ref["ids"]))
    ours = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    valid = ref["ids"] != config.pad_token_id  # fairseq's outputs at pad positions are unused
    np.testing.assert_allclose(ours[valid], ref["log_probs"][valid], atol=TOL)


def test_cached_step_equals_teacher_forcing_and_round_trip(tmp_path):
    config, params = load_lm(str(ASSETS / "transformer_lm_untied.pt"))
    ids = jnp.array([[2, 5, 9, 7, 4, 11], [2, 8, 8, 3, 6, 5]], jnp.int32)
    lm = TransformerLM(config)
    full = lm.apply({"params": params}, ids)  # [2, 6, V]
    cache = lm.init_cache(2, 6)
    for t in range(6):
        step, cache = lm.apply(
            {"params": params}, ids[:, t], t, cache, 7, method=TransformerLM.step
        )
        np.testing.assert_allclose(step, full[:, t], atol=1e-5)
    save_lm(str(tmp_path / "lm"), config, params)
    again_config, again = load_lm(str(tmp_path / "lm"))
    assert again_config == config
    jax.tree.map(np.testing.assert_array_equal, params, again)


def test_unsupported_fairseq_lms_are_refused_by_name(tmp_path):
    checkpoint = torch.load(ASSETS / "transformer_lm_untied.pt", weights_only=False)
    for change, words in (
        ({"adaptive_softmax_cutoff": "100,200"}, "adaptive softmax"),
        ({"decoder_learned_pos": True}, "learned positions"),
        ({"arch": "lstm_lm"}, "not a transformer_lm"),
    ):
        args = argparse.Namespace(**{**vars(checkpoint["args"]), **change})
        path = tmp_path / "lm.pt"
        torch.save({**checkpoint, "args": args}, path)
        with pytest.raises(ValueError, match=words):
            load_lm(str(path))
    state = dict(checkpoint["model"])
    del state["decoder.layers.1.fc2.bias"]
    torch.save({**checkpoint, "model": state}, tmp_path / "lm.pt")
    with pytest.raises(ValueError, match=r"missing keys \['decoder.layers.1.fc2.bias'\]"):
        load_lm(str(tmp_path / "lm.pt"))


def test_lm_config_refuses_bad_values(tmp_path):
    with pytest.raises(ValueError, match="layers=1000000 is outside"):
        LMConfig(vocab_size=10, layers=10**6)
    with pytest.raises(ValueError, match="must divide into 3 heads"):
        LMConfig(vocab_size=10, d_model=16, attention_heads=3)
    (tmp_path / "lm_config.json").write_text('{"vocab_size": "ten"}')
    with pytest.raises(ValueError, match="lm_config.json: LMConfig: vocab_size='ten'"):
        LMConfig.load(str(tmp_path))
