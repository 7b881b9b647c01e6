"""Optimiser pieces against fairseq's definitions; accumulation and encoder freezing."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from s2t_jax.training import optim, train_state
from tests.training.helpers import make_task, random_batch, split_batch


class FairseqInverseSqrt:
    """fairseq's InverseSquareRootSchedule (lr_scheduler/inverse_square_root_schedule.py)."""

    def __init__(self, lr, warmup_updates, warmup_init_lr=-1):
        if warmup_init_lr < 0:
            warmup_init_lr = 0 if warmup_updates > 0 else lr
        self.warmup_init_lr, self.warmup_updates = warmup_init_lr, warmup_updates
        self.lr_step = (lr - warmup_init_lr) / warmup_updates
        self.decay_factor = lr * warmup_updates**0.5

    def step_update(self, num_updates):
        if num_updates < self.warmup_updates:
            return self.warmup_init_lr + num_updates * self.lr_step
        return self.decay_factor * num_updates**-0.5


@pytest.mark.parametrize("lr,warmup,init", [(2e-3, 10000, -1), (1e-3, 7, 1e-5)])
def test_inverse_sqrt_matches_fairseq(lr, warmup, init):
    ours = optim.inverse_sqrt_schedule(lr, warmup, init)
    ref = FairseqInverseSqrt(lr, warmup, init)
    for n in [0, 1, 2, warmup // 2, warmup - 1, warmup, warmup + 1, 3 * warmup, 300000]:
        assert math.isclose(float(ours(n)), ref.step_update(n), rel_tol=1e-5, abs_tol=1e-12)


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_matches_torch(max_norm):
    rng = np.random.default_rng(0)
    grads = {
        "a": rng.normal(size=(3, 4)).astype(np.float32),
        "b": rng.normal(size=5).astype(np.float32),
    }
    ours, _ = optim.clip_by_global_norm(max_norm).update(jax.tree.map(jnp.asarray, grads), None)
    tensors = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(tensors, max_norm)
    for t, k in zip(tensors, grads):
        np.testing.assert_allclose(ours[k], t.grad.numpy(), rtol=1e-6)


def _run(task, state, batches, rng, step=None):
    step = step or jax.jit(functools.partial(train_state.train_step, task))
    metrics = []
    for b in batches:
        state, m = step(state, b, rng)
        metrics.append(m)
    return state, metrics


def test_update_freq_equals_one_big_batch():
    """Two micro-batches with update_freq=2 give the update of their union (fairseq's sums)."""
    batch = random_batch(batch=8)
    rng = jax.random.key(0)
    _, big = make_task(update_freq=1)
    _, acc = make_task(update_freq=2)
    s_big = train_state.init_state(big, jax.random.key(1))
    s_acc = train_state.init_state(acc, jax.random.key(1))
    s_big, m_big = _run(big, s_big, [batch], rng)
    s_acc, m_acc = _run(acc, s_acc, split_batch(batch, 2), rng)
    assert int(s_acc["step"]) == 1 and [float(m["updated"]) for m in m_acc] == [0.0, 1.0]
    total = sum(float(m["loss"]) for m in m_acc)
    np.testing.assert_allclose(total, float(m_big[0]["loss"]), rtol=1e-5)
    np.testing.assert_allclose(
        float(m_acc[1]["grad_norm"]), float(m_big[0]["grad_norm"]), rtol=1e-4
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        s_acc["params"],
        s_big["params"],
    )


def test_encoder_freezing_updates():
    _, task = make_task(encoder_freezing_updates=2, lr=1e-2, warmup_updates=1, warmup_init_lr=1e-2)
    state = train_state.init_state(task, jax.random.key(0))
    enc0 = jax.device_get(state["params"]["model"]["encoder"])
    dec0 = jax.device_get(state["params"]["model"]["decoder"])
    batches = [random_batch(seed=i) for i in range(3)]
    step = jax.jit(functools.partial(train_state.train_step, task))
    state, _ = _run(task, state, batches[:2], jax.random.key(0), step)
    same = jax.tree.map(np.array_equal, enc0, jax.device_get(state["params"]["model"]["encoder"]))
    assert all(jax.tree.leaves(same)), "the encoder must not move while frozen"
    moved = jax.tree.map(np.array_equal, dec0, jax.device_get(state["params"]["model"]["decoder"]))
    assert not all(jax.tree.leaves(moved))
    state, _ = _run(task, state, batches[2:], jax.random.key(0), step)
    same = jax.tree.map(np.array_equal, enc0, jax.device_get(state["params"]["model"]["encoder"]))
    assert not all(jax.tree.leaves(same)), "the encoder trains after encoder_freezing_updates"
