"""The criterion against a direct numpy evaluation of fairseq's formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from s2t_jax.training.losses import ctc_loss, label_smoothed_nll_loss

PAD = 1


def fairseq_reference(logits, target, eps, ignore_prefix=0):
    """fairseq's label_smoothed_nll_loss + accuracy, written out in numpy (float64)."""
    logits = logits[:, ignore_prefix:].astype(np.float64)
    target = target[:, ignore_prefix:]
    lprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(lprobs, target[..., None], -1)[..., 0]
    smooth = -lprobs.sum(-1)
    pad = target == PAD
    nll[pad] = 0
    smooth[pad] = 0
    eps_i = eps / (lprobs.shape[-1] - 1)
    loss = (1 - eps - eps_i) * nll.sum() + eps_i * smooth.sum()
    correct = ((lprobs.argmax(-1) == target) & ~pad).sum()
    return loss, nll.sum(), correct, (~pad).sum()


@pytest.mark.parametrize("eps,prefix", [(0.1, 0), (0.0, 0), (0.2, 1)])
def test_label_smoothing_matches_fairseq(eps, prefix):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 11)).astype(np.float32) * 3
    target = rng.integers(0, 11, size=(3, 7))
    target[0, 5:] = PAD
    target[2, 3:] = PAD
    out = label_smoothed_nll_loss(jnp.asarray(logits), jnp.asarray(target), eps, PAD, prefix)
    loss, nll, correct, total = fairseq_reference(logits, target, eps, prefix)
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(out["nll_loss"], nll, rtol=1e-5)
    assert out["n_correct"] == correct and out["n_total"] == total


def test_ctc_loss_sums_optax_and_zeroes_infeasible():
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 6, 9)), jnp.float32)
    frame_mask = jnp.asarray([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], bool)
    # row 0: tokens 5 6 eos; row 1: 4 4 eos (a repeat needs a blank); row 2: 3 tokens > 2 frames
    target = jnp.asarray([[5, 6, 2, 1], [4, 4, 2, 1], [5, 6, 7, 2]])
    got = ctc_loss(logits, frame_mask, target, pad_id=1, eos_id=2, blank_id=0)
    labels = jnp.asarray([[5, 6, 0, 0], [4, 4, 0, 0]])
    lpad = jnp.asarray([[0, 0, 1, 1], [0, 0, 1, 1]], jnp.float32)
    want = optax.ctc_loss(logits[:2], 1.0 - frame_mask[:2], labels, lpad, blank_id=0).sum()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert jnp.isfinite(jax.grad(lambda x: ctc_loss(x, frame_mask, target, 1, 2))(logits)).all()
