"""The Conformer encoder's own properties: each position scheme, padding, batch norm modes.
(Parity with fairseq is tests/checkpoints/test_fairseq_reference.py.)"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2t_jax.models.config import Speech2TextConfig
from s2t_jax.models.conformer import fresh_batch_stats, relative_shift, rotary
from s2t_jax.models.model import Speech2Text
from s2t_jax.models.params import abstract_params
from s2t_jax.models.subsampler import conv_extent_variables


def _config(pos_enc_type="abs", **changes):
    return Speech2TextConfig(
        vocab_size=16,
        d_model=32,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=2,
        conv_channels=8,
        encoder_type="conformer",
        pos_enc_type=pos_enc_type,
        depthwise_conv_kernel_size=7,
        **changes,
    )


@functools.lru_cache(maxsize=None)
def _model(pos_enc_type="abs", zero_padded_frames=False):
    """A random model, drawn in numpy over the abstract params (compiling Flax's random init
    would take most of this file's time). Batch norm is away from identity, so that eval mode
    visibly uses the stored statistics."""
    config = _config(pos_enc_type, zero_padded_frames=zero_padded_frames)
    rng = np.random.default_rng(0)

    def draw(path, leaf):
        if jax.tree_util.keystr(path).endswith("['scale']"):
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        return rng.normal(0.0, 0.2, leaf.shape).astype(np.float32)

    params = jax.tree_util.tree_map_with_path(draw, abstract_params(config))
    stats = jax.tree.map(
        lambda x: rng.uniform(0.5, 1.5, x.shape).astype(np.float32), fresh_batch_stats(config)
    )
    return Speech2Text(config), {"params": params, "batch_stats": stats}


def _features(lengths, frames, seed=0):
    x = np.random.default_rng(seed).normal(size=(len(lengths), frames, 80)).astype(np.float32)
    mask = (np.arange(frames)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
    return jnp.asarray(x * mask[..., None]), jnp.asarray(mask)


_COMPILED = {}


def _encode(module, variables, x, mask, deterministic=True, mutable=False):
    """One compiled encode per model and mode (compiling beats running op by op here)."""
    key = (id(module), deterministic, mutable)  # modules are not hashable; _model keeps them
    if key not in _COMPILED:

        def run(variables, x, mask):
            return module.apply(
                variables,
                x,
                mask,
                deterministic,
                method=Speech2Text.encode,
                mutable=["batch_stats"] if mutable else False,
                rngs={"dropout": jax.random.key(1)},
            )

        _COMPILED[key] = jax.jit(run)
    return _COMPILED[key](variables, x, mask)


@pytest.mark.parametrize("pos", ["abs", "rope", "rel_pos"])
def test_each_position_scheme_and_padding(pos):
    """Shapes and parameters of each scheme; with zero_padded_frames, a row's valid outputs do
    not depend on its batch's padding (nor on what the padding holds)."""
    module, variables = _model(pos, zero_padded_frames=True)
    keys = set(variables["params"]["encoder"]["layers_0"]["self_attn"])
    assert ({"linear_pos", "pos_bias_u", "pos_bias_v"} <= keys) == (pos == "rel_pos")
    x, mask = _features([41, 23], 41)
    batched, valid = _encode(module, variables, x, mask)
    assert batched.shape == (2, 11, 32) and np.asarray(valid).sum(1).tolist() == [11, 6]
    assert np.isfinite(np.asarray(batched)).all()
    noisy, _ = _encode(module, variables, x.at[1, 23:].set(5.0), mask)
    np.testing.assert_allclose(noisy[1, :6], batched[1, :6], atol=1e-5, rtol=0)
    swapped, _ = _encode(module, variables, x[::-1], mask[::-1])  # another neighbour row
    np.testing.assert_allclose(swapped[0, :6], batched[1, :6], atol=1e-5, rtol=0)
    if pos == "rel_pos":  # and the row alone, unpadded (one more compile, so for one scheme)
        alone, _ = _encode(module, variables, x[1:, :23], mask[1:, :23])
        np.testing.assert_allclose(batched[1, :6], alone[0], atol=1e-5, rtol=0)


def test_fairseq_mode_lets_padding_reach_the_convolution_but_not_past_an_extent():
    """Without zero_padded_frames padding is convolved as fairseq convolves it; frames padded
    past a conv extent (length buckets) stay invisible."""
    module, variables = _model("rel_pos")
    x, mask = _features([41, 23], 41)
    batched, valid = _encode(module, variables, x, mask)
    noisy, _ = _encode(module, variables, x.at[1, 23:].set(5.0), mask)
    assert not np.allclose(noisy[1, :6], batched[1, :6], atol=1e-5)
    bucket_x = jnp.pad(x, ((0, 0), (0, 23), (0, 0)))
    bucket_mask = jnp.pad(mask, ((0, 0), (0, 23)))
    bucketed, _ = _encode(
        module, {**variables, **conv_extent_variables(jnp.int32(41))}, bucket_x, bucket_mask
    )
    np.testing.assert_allclose(bucketed[:, : batched.shape[1]][valid], batched[valid], atol=1e-5)


def test_batch_norm_eval_uses_stored_statistics_and_training_updates_them():
    module, variables = _model("abs", zero_padded_frames=True)
    x, mask = _features([41, 23], 41)
    eval_out, valid = _encode(module, variables, x, mask)
    fresh = {**variables, "batch_stats": fresh_batch_stats(module.config)}
    other, _ = _encode(module, fresh, x, mask)
    assert not np.allclose(eval_out, other, atol=1e-4)  # eval reads batch_stats

    (train_out, _), updated = _encode(module, variables, x, mask, mutable=True)
    assert np.allclose(train_out, eval_out, atol=1e-6)  # deterministic=True: still eval
    (train_out, _), updated = _encode(
        module,
        variables,
        x,
        mask,
        deterministic=False,
        mutable=True,
    )
    assert not np.allclose(train_out[valid], eval_out[valid], atol=1e-4)
    old = variables["batch_stats"]["encoder"]["layers_0"]["conv_module"]["batch_norm"]
    new = updated["batch_stats"]["encoder"]["layers_0"]["conv_module"]["batch_norm"]
    assert not np.allclose(old["mean"], new["mean"])
    # Training statistics count valid frames only: padding content does not move them.
    noisy = x.at[1, 23:].set(5.0)
    _, updated_noisy = _encode(
        module,
        variables,
        noisy,
        mask,
        deterministic=False,
        mutable=True,
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0),
        updated["batch_stats"],
        updated_noisy["batch_stats"],
    )


def test_training_without_mutable_batch_stats_fails_loudly():
    module, variables = _model("abs")
    x, mask = _features([41, 23], 41)
    with pytest.raises(Exception, match="batch_stats|immutable"):
        _encode(module, variables, x, mask, deterministic=False)


def test_relative_shift_and_rotary():
    q = 5
    scores = jnp.arange(2 * q - 1, dtype=jnp.float32)[None, None, None, :].repeat(q, axis=2)
    shifted = np.asarray(relative_shift(scores))[0, 0]  # column of relative position i - j
    i, j = np.meshgrid(np.arange(q), np.arange(q), indexing="ij")
    np.testing.assert_array_equal(shifted, (q - 1) - (i - j))
    # Rotary: a rotation (norms kept), and q.k depends only on the offset of the two positions.
    v = jnp.asarray(np.random.default_rng(0).normal(size=(1, 1, 1, 8)), jnp.float32)
    rotated = rotary(jnp.tile(v, (1, 6, 1, 1)))[0, :, 0]  # [6 positions, 8]
    np.testing.assert_allclose(np.linalg.norm(rotated, axis=-1), np.linalg.norm(v), rtol=1e-5)
    dots = rotated @ rotated.T
    np.testing.assert_allclose(dots[0, 2], dots[3, 5], rtol=1e-5)


def test_config_checks_the_conformer_fields():
    with pytest.raises(ValueError, match="encoder_type"):
        _config().replace(encoder_type="lstm")
    with pytest.raises(ValueError, match="pos_enc_type"):
        _config("alibi")
    with pytest.raises(ValueError, match="depthwise_conv_kernel_size"):
        _config().replace(depthwise_conv_kernel_size=4)
    config = Speech2TextConfig()
    assert config.encoder_type == "transformer"
    assert "encoder_type" not in config.to_transformers_dict()
    assert Speech2TextConfig.from_dict(_config("rel_pos").to_dict()).pos_enc_type == "rel_pos"


def test_params_without_batch_stats_are_refused_by_name():
    module, variables = _model("abs")
    x, mask = _features([41, 23], 41)
    with pytest.raises(ValueError, match="batch-norm running statistics"):
        encode = functools.partial(module.apply, method=Speech2Text.encode)
        jax.eval_shape(encode, {"params": variables["params"]}, x, mask)  # trace, no compile
