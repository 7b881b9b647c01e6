"""fairseq checkpoints written by fairseq itself (tests/assets/fairseq, made by
tools/make_fairseq_fixtures.py) load through our loader and compute what fairseq computed, to
1e-4 in float32."""

import argparse
import functools
import io
import os
import pickle
import zipfile

import jax.numpy as jnp
import numpy as np
import pytest

from s2t_jax.checkpoints.fairseq import load_fairseq_checkpoint, load_fairseq_variables
from s2t_jax.checkpoints.safe_pickle import UnsafeCheckpointError, load_torch_checkpoint
from s2t_jax.models.config import Speech2TextConfig
from s2t_jax.models.model import Speech2Text
from s2t_jax.models.params import abstract_params, count_params

TOL = 1e-4
ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "fairseq")
LOADABLE = [
    "conformer_abs",
    "conformer_fairseq_mha",
    "conformer_rel_pos",
    "conformer_rope",
    "transformer_tied_conv3_gelu",
    "transformer_untied_ctc",
]


@functools.lru_cache(maxsize=None)
def _load(name):
    config, variables = load_fairseq_variables(os.path.join(ASSETS, f"{name}.pt"))
    return config, variables, dict(np.load(os.path.join(ASSETS, f"{name}.npz")))


@pytest.mark.parametrize("name", LOADABLE)
def test_matches_fairseq_outputs(name):
    config, variables, ref = _load(name)
    feats, lengths = ref["features"], ref["lengths"]
    mask = (np.arange(feats.shape[1])[None] < lengths[:, None]).astype(np.int32)
    logits, enc, enc_mask = Speech2Text(config).apply(
        variables, jnp.asarray(feats), jnp.asarray(mask), jnp.asarray(ref["prev_output_tokens"])
    )
    valid = np.asarray(enc_mask)
    np.testing.assert_array_equal(valid, ref["encoder_valid"])
    assert not valid.all()  # the second row is padded: padding is part of what is checked
    enc = np.asarray(enc)
    np.testing.assert_allclose(enc[valid], ref["encoder_out"][valid], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(logits), ref["logits"], atol=TOL, rtol=0)
    assert count_params(variables["params"]) == int(ref["num_params"])
    if "ctc_logits" in ref:
        ctc = variables["params"]["ctc_proj"]
        got = enc @ ctc["kernel"] + ctc["bias"]
        np.testing.assert_allclose(got[valid], ref["ctc_logits"][valid], atol=TOL, rtol=0)


def test_config_read_from_each_layout():
    expected = {
        "conformer_abs": ("conformer", "abs", 7, "relu", False),
        "conformer_fairseq_mha": ("conformer", "abs", 5, "relu", False),
        "conformer_rel_pos": ("conformer", "rel_pos", 15, "relu", True),
        "conformer_rope": ("conformer", "rope", 31, "relu", False),
        "transformer_tied_conv3_gelu": ("transformer", "abs", 31, "gelu", True),
        "transformer_untied_ctc": ("transformer", "abs", 31, "gelu_new", False),
    }
    for name, (kind, pos, kernel, act, tied) in expected.items():
        config = _load(name)[0]
        got = (
            config.encoder_type,
            config.pos_enc_type,
            config.depthwise_conv_kernel_size,
            config.activation_function,
            config.tie_word_embeddings,
        )
        assert got == (kind, pos, kernel, act, tied), name
    assert _load("transformer_tied_conv3_gelu")[0].conv_kernel_sizes == (3, 5, 3)
    assert _load("transformer_untied_ctc")[0].num_conv_layers == 1
    assert not _load("transformer_untied_ctc")[0].scale_embedding
    assert Speech2TextConfig.from_dict(_load("conformer_rope")[0].to_dict()).pos_enc_type == "rope"


def test_batch_norm_training_step_matches_fairseq():
    """fairseq's train-mode pass on an unpadded batch: batch statistics, and the running
    statistics it leaves (momentum 0.1, unbiased variance)."""
    config, variables, ref = _load("conformer_rel_pos")
    (enc, _), updated = Speech2Text(config).apply(
        variables,
        jnp.asarray(ref["train_features"]),
        None,
        False,
        method=Speech2Text.encode,
        mutable=["batch_stats"],
    )
    np.testing.assert_allclose(np.asarray(enc), ref["train_encoder_out"], atol=TOL, rtol=0)
    bn = updated["batch_stats"]["encoder"]["layers_0"]["conv_module"]["batch_norm"]
    np.testing.assert_allclose(bn["mean"], ref["train_running_mean_0"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(bn["var"], ref["train_running_var_0"], atol=1e-6, rtol=0)


def test_params_only_loader():
    config, params = load_fairseq_checkpoint(os.path.join(ASSETS, "transformer_tied_conv3_gelu.pt"))
    assert "lm_head" not in params and config.tie_word_embeddings
    with pytest.raises(ValueError, match="load_fairseq_variables"):
        load_fairseq_checkpoint(os.path.join(ASSETS, "conformer_abs.pt"))


def test_what_our_model_lacks_is_named():
    with pytest.raises(ValueError, match="layernorm_embedding"):
        load_fairseq_variables(os.path.join(ASSETS, "transformer_layernorm_embedding.pt"))


def test_omegaconf_cfg_comes_back_as_plain_data():
    checkpoint = load_torch_checkpoint(os.path.join(ASSETS, "conformer_rel_pos.pt"))
    cfg = checkpoint["cfg"]
    assert type(cfg) is dict and isinstance(cfg["model"], argparse.Namespace)
    assert cfg["model"].arch == "s2t_conformer" and cfg["model"].pos_enc_type == "rel_pos"
    assert cfg["common"]["seed"] == 1 and isinstance(cfg["optimization"]["lr"], list)


def _torch_zip(payload: bytes) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", payload)
    return buf.getvalue()


def test_omegaconf_names_call_nothing(tmp_path):
    """The type names an omegaconf pickle carries are inert markers: a file that tries to call
    one (dict(...) through REDUCE) is refused, and nothing of omegaconf's is imported."""
    # GLOBAL builtins.dict; EMPTY_TUPLE; REDUCE; STOP
    payload = b"\x80\x02c__builtin__\ndict\n)R."
    path = tmp_path / "bad.pt"
    path.write_bytes(_torch_zip(payload))
    with pytest.raises((UnsafeCheckpointError, pickle.UnpicklingError, TypeError)):
        load_torch_checkpoint(path)
    # A DictConfig built with arguments: NEWOBJ passes them to our stand-in, which ignores them.
    payload = b"\x80\x02comegaconf.dictconfig\nDictConfig\nX\x01\x00\x00\x00a\x85\x81}b."
    path.write_bytes(_torch_zip(payload))
    assert load_torch_checkpoint(path) is None


def test_covost_conformer_parameter_counts():
    """fairseq's CoVoST 2 table: s2t_conformer En ASR has 42.1M params (abs, rope) and 42.9M
    (rel_pos). Those fit encoder_layers=12 (with s2t_conformer's d_model 256, ffn 2048, 6
    decoder layers, 1024 conv channels, untied output) and a character vocabulary (32 stands in
    for it here): the counts are 42,131,200 + 512 * vocab and 42,923,776 + 512 * vocab, and
    rel_pos adds exactly 12 * (256 * 256 + 2 * 256). The architecture's default of 16 encoder
    layers would give 52.4M."""
    counts = {}
    for pos in ("abs", "rel_pos"):  # rope has abs's parameters (fixture conformer_rope)
        config = Speech2TextConfig(
            vocab_size=32,
            d_model=256,
            encoder_ffn_dim=2048,
            decoder_ffn_dim=2048,
            encoder_layers=12,
            decoder_layers=6,
            encoder_attention_heads=4,
            decoder_attention_heads=8,
            conv_channels=1024,
            tie_word_embeddings=False,
            encoder_type="conformer",
            pos_enc_type=pos,
        )
        counts[pos] = count_params(abstract_params(config))
    assert counts["abs"] == 42_131_200 + 512 * 32
    assert counts["rel_pos"] - counts["abs"] == 12 * (256 * 256 + 2 * 256)
    assert round(counts["abs"] / 1e6, 1) == 42.1
    assert round(counts["rel_pos"] / 1e6, 1) == 42.9


# rel_pos only: the user API's path is the same for every position scheme, and each scheme's
# logits are checked against fairseq in test_matches_fairseq_outputs.
@pytest.mark.parametrize("name", ["conformer_rel_pos"])
def test_conformer_through_the_user_api(name, tmp_path):
    """A fairseq Conformer .pt through from_pretrained: fairseq's logits from model(...),
    generate() runs, our format keeps the batch-norm statistics, transformers' is refused."""
    from s2t_jax import Speech2TextForConditionalGeneration

    _, _, ref = _load(name)
    feats, lengths = ref["features"], ref["lengths"]
    mask = (np.arange(feats.shape[1])[None] < lengths[:, None]).astype(np.int32)
    model = Speech2TextForConditionalGeneration.from_pretrained(os.path.join(ASSETS, f"{name}.pt"))
    assert model.batch_stats is not None
    out = model(feats, mask, decoder_input_ids=ref["prev_output_tokens"])
    np.testing.assert_allclose(np.asarray(out.logits), ref["logits"], atol=TOL, rtol=0)
    ids = model.generate(feats, mask, max_length=6, num_beams=2)
    assert ids.shape[0] == 2 and (ids[:, 0] == model.config.decoder_start_token_id).all()
    model.save_pretrained(tmp_path / "ours")
    again = Speech2TextForConditionalGeneration.from_pretrained(tmp_path / "ours")
    out2 = again(feats, mask, decoder_input_ids=ref["prev_output_tokens"])
    np.testing.assert_array_equal(np.asarray(out2.logits), np.asarray(out.logits))
    np.testing.assert_array_equal(again.generate(feats, mask, max_length=6, num_beams=2), ids)
    with pytest.raises(ValueError, match="transformers has no conformer"):
        model.save_pretrained(tmp_path / "hf", transformers_format=True)
