"""CMVN: utterance statistics over valid frames, the variance / std floor, global stats, steps."""

import numpy as np
import pytest

from s2t_jax.frontend.cmvn import (
    VARIANCE_FLOOR,
    GlobalCMVN,
    UtteranceCMVN,
    apply_cmvn,
    cmvn_step,
    load_global_cmvn,
    utterance_cmvn,
)


@pytest.fixture(scope="module")
def feats() -> np.ndarray:
    """Raw-fbank-like features [120, 80] float32: per-band offsets and spreads."""
    rng = np.random.default_rng(0)
    return (
        rng.normal(-5.0, 2.0, 80) + rng.uniform(0.5, 3.0, 80) * rng.standard_normal((120, 80))
    ).astype(np.float32)


@pytest.mark.parametrize("means,variances", [(True, True), (True, False), (False, True)])
def test_utterance_cmvn_matches_the_formula(feats, means, variances):
    x = feats.astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    want = ((x - mean) if means else x) / (std if variances else 1.0)
    got = utterance_cmvn(feats, None, means, variances)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Neither: the centring is undone, so the input comes back up to float32 rounding.
    np.testing.assert_allclose(utterance_cmvn(feats, None, False, False), feats, atol=1e-6)


def test_batch_statistics_come_from_valid_frames(feats):
    batch = np.zeros((2, 120, 80), np.float32)
    batch[0], batch[1, :70] = feats, feats[:70]
    mask = np.zeros((2, 120), np.int32)
    mask[0], mask[1, :70] = 1, 1
    out = utterance_cmvn(batch, mask)
    np.testing.assert_array_equal(out[0], utterance_cmvn(feats))
    np.testing.assert_array_equal(out[1, :70], utterance_cmvn(feats[:70]))


def test_constant_features_normalise_to_zero():
    constant = np.full((50, 80), -15.9, np.float32)
    np.testing.assert_array_equal(utterance_cmvn(constant), 0.0)
    one_frame = np.arange(80, dtype=np.float32)[None]  # [1, 80]: variance 0 everywhere
    np.testing.assert_array_equal(utterance_cmvn(one_frame), 0.0)


def test_global_cmvn_numbers_and_floor(tmp_path, feats):
    mean, std = feats.mean(axis=0).astype(np.float64), feats.std(axis=0).astype(np.float64)
    std[3] = 0.0
    np.savez(tmp_path / "gcmvn.npz", mean=mean, std=std)
    step = GlobalCMVN.load(tmp_path / "gcmvn.npz")
    assert step.num_mel_bins == 80 and "gcmvn.npz" in repr(step)
    got = step(feats)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    floored = np.maximum(std, np.sqrt(VARIANCE_FLOOR))
    np.testing.assert_allclose(got, (feats - mean) / floored, rtol=1e-5, atol=1e-4)
    np.savez(tmp_path / "bad.npz", average=mean)
    with pytest.raises(ValueError, match="bad.npz: global CMVN stats lack"):
        load_global_cmvn(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="differ"):
        GlobalCMVN(mean, std[:40])


def test_steps_chain_in_order_into_out(feats):
    steps = [GlobalCMVN(np.full(80, 1.0), np.full(80, 2.0)), UtteranceCMVN(False, True)]
    want = utterance_cmvn((feats - 1.0) * np.float32(0.5), None, False, True)
    out = np.empty_like(feats)
    assert apply_cmvn(steps, feats, out=out) is out
    np.testing.assert_array_equal(out, want)
    # Alone, means-off utterance CMVN into `out` still reads the unchanged input.
    np.testing.assert_array_equal(
        apply_cmvn([UtteranceCMVN(False, True)], feats, out=out), utterance_cmvn(feats, None, False)
    )
    copy = apply_cmvn([], feats)
    assert copy is not feats
    np.testing.assert_array_equal(copy, feats)


def test_steps_from_data_config_dicts(tmp_path):
    np.savez(tmp_path / "g.npz", mean=np.zeros(80), std=np.ones(80))
    assert cmvn_step({"kind": "utterance", "norm_means": True, "norm_vars": False}) == (
        UtteranceCMVN(True, False)
    )
    assert isinstance(
        cmvn_step({"kind": "global", "stats_npz_path": tmp_path / "g.npz"}), GlobalCMVN
    )
    step = UtteranceCMVN()
    assert cmvn_step(step) is step
    with pytest.raises(ValueError, match="unknown CMVN step"):
        cmvn_step({"kind": "speaker"})
