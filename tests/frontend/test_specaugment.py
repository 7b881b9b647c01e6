"""SpecAugment: mask widths, counts and placement as fairseq's SpecAugmentTransform draws them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2t_jax.frontend.specaugment import POLICIES, SpecAugmentPolicy, spec_augment


def _runs(flags):
    """Lengths of runs of True in a 1-D bool array."""
    runs, n = [], 0
    for f in list(flags) + [False]:
        if f:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_policies_are_fairseqs():
    assert POLICIES["lb"] == SpecAugmentPolicy(1, 27, 1, 100, 1.0, 0)
    assert POLICIES["ld"] == SpecAugmentPolicy(2, 27, 2, 100, 1.0, 0)
    assert POLICIES["sm"] == SpecAugmentPolicy(2, 15, 2, 70, 0.2, 0)
    assert POLICIES["ss"] == SpecAugmentPolicy(2, 27, 2, 70, 0.2, 0)
    parsed = SpecAugmentPolicy.from_fairseq(
        {
            "time_wrap_W": 0,
            "freq_mask_N": 2,
            "freq_mask_F": 27,
            "time_mask_N": 2,
            "time_mask_T": 100,
            "time_mask_p": 1.0,
        }
    )
    assert parsed == POLICIES["ld"]


def test_single_masks_have_fairseq_widths_and_stay_in_valid_frames():
    """One freq and one time mask per utterance: widths in [0, F) and [0, min(T, p n)),
    each width value drawn, masks inside the valid frames, mask value = utterance mean."""
    policy = SpecAugmentPolicy(
        freq_mask_n=1, freq_mask_f=5, time_mask_n=1, time_mask_t=7, time_mask_p=0.5
    )
    batch, frames, freqs = 256, 40, 12
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, frames, freqs)).astype(np.float32) + 3.0
    lengths = rng.integers(4, frames + 1, size=batch)
    x[np.arange(frames)[None, :] >= lengths[:, None]] = 0.0
    out = np.asarray(
        jax.jit(spec_augment, static_argnums=3)(
            jnp.asarray(x), jnp.asarray(lengths), jax.random.key(0), policy
        )
    )
    f_widths, t_widths = set(), set()
    for b in range(batch):
        n = lengths[b]
        changed = out[b] != x[b]
        assert not changed[n:].any(), "padded frames must not change"
        mean = x[b, :n].mean()
        np.testing.assert_allclose(out[b][changed], mean, rtol=1e-5)
        full_cols = changed[:n].all(axis=0)  # frequency bands masked over every valid frame
        full_rows = changed[:n].all(axis=1)  # frames masked over every bin
        fw = sum(_runs(full_cols))
        tw = sum(_runs(full_rows))
        assert len(_runs(full_cols)) <= 1 and fw < policy.freq_mask_f
        assert len(_runs(full_rows)) <= 1
        assert tw < max(min(policy.time_mask_t, int(np.floor(n * policy.time_mask_p))), 1)
        f_widths.add(fw)
        t_widths.add(tw)
    assert f_widths == set(range(policy.freq_mask_f))  # 0 .. F-1, all drawn
    assert max(t_widths) == policy.time_mask_t - 1


@pytest.mark.parametrize("name", ["lb", "ld"])
def test_masked_share_is_bounded_by_policy(name):
    policy = POLICIES[name]
    x = jnp.asarray(np.random.default_rng(1).normal(size=(64, 300, 80)), jnp.float32)
    lengths = jnp.full((64,), 300)
    out = spec_augment(x, lengths, jax.random.key(3), policy)
    changed = np.asarray(out != x)
    bands = changed.all(axis=1).sum(axis=1)  # masked bins per utterance
    rows = changed.all(axis=2).sum(axis=1)  # masked frames per utterance
    assert (bands <= policy.freq_mask_n * (policy.freq_mask_f - 1)).all()
    assert (rows <= policy.time_mask_n * (policy.time_mask_t - 1)).all()
    assert bands.mean() > 0 and rows.mean() > 0


def test_too_few_bins_leaves_input_unchanged_and_time_warp_keeps_shape():
    x = jnp.ones((2, 50, 20))
    assert (spec_augment(x, jnp.asarray([50, 30]), jax.random.key(0), POLICIES["lb"]) == x).all()
    warp = SpecAugmentPolicy(time_warp_w=5)
    ramp = jnp.broadcast_to(jnp.arange(50, dtype=jnp.float32)[None, :, None], (2, 50, 4))
    out = spec_augment(ramp, jnp.asarray([50, 8]), jax.random.key(1), warp)
    assert out.shape == ramp.shape
    # a warp of a ramp stays monotone and in range, moves it, and leaves short rows (2W >= n)
    assert (jnp.diff(out[0, :, 0]) >= -1e-5).all()
    assert out[0].min() >= 0 and out[0].max() <= 49 and not (out[0] == ramp[0]).all()
    assert (out[1] == ramp[1]).all()
