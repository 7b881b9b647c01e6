"""The optimiser of fairseq's S2T recipes in optax: Adam, inverse-sqrt schedule, norm clipping.

fairseq conventions kept here, because published hyperparameters assume them:
  * `inverse_sqrt`: the lr rises linearly from `warmup_init_lr` (default 0) to `lr` over
    `warmup_updates`, then decays as lr * sqrt(warmup_updates / num_updates). The k-th update
    (0-based) uses the lr fairseq sets after k updates, so the very first update has lr
    `warmup_init_lr`, as in fairseq;
  * clipping scales the gradient by min(1, clip_norm / (norm + 1e-6)) (torch's
    clip_grad_norm_), after it has been normalised by the number of target tokens;
    clip_norm = 0 disables it;
  * weight decay is decoupled (fairseq's Adam is AdamW) and applies to every parameter.
One difference: fairseq adds Adam's eps to sqrt(v) before bias correction, optax after; with
eps = 1e-8 the two differ only while sqrt(v) is ~1e-8.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def inverse_sqrt_schedule(lr: float, warmup_updates: int, warmup_init_lr: float = -1.0):
    """fairseq's InverseSquareRootSchedule, as an optax schedule of the update count."""
    if warmup_updates < 1:
        raise ValueError("inverse_sqrt needs warmup_updates >= 1 (fairseq's lr is 0 without it)")
    if warmup_init_lr < 0:
        warmup_init_lr = 0.0
    lr_step = (lr - warmup_init_lr) / warmup_updates
    decay_factor = lr * warmup_updates**0.5

    def schedule(count):
        count = jnp.asarray(count, jnp.float32)
        warm = warmup_init_lr + count * lr_step
        decay = decay_factor * jax.lax.rsqrt(jnp.maximum(count, 1.0))
        return jnp.where(count < warmup_updates, warm, decay)

    return schedule


def make_schedule(config):
    if config.lr_scheduler == "inverse_sqrt":
        return inverse_sqrt_schedule(config.lr, config.warmup_updates, config.warmup_init_lr)
    if config.lr_scheduler == "fixed":
        return optax.constant_schedule(config.lr)
    raise ValueError(f"lr_scheduler={config.lr_scheduler!r}: expected inverse_sqrt or fixed")


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """torch.nn.utils.clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6))."""

    def update(updates, state, params=None):
        del params
        if max_norm <= 0:
            return updates, state
        coef = jnp.minimum(max_norm / (optax.tree.norm(updates) + 1e-6), 1.0)
        return jax.tree.map(lambda g: g * coef.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config) -> tuple[optax.GradientTransformation, callable]:
    """-> (clip + Adam(W) with the schedule, schedule). Reads fairseq-named config keys."""
    schedule = make_schedule(config)
    b1, b2 = config.adam_betas
    if config.weight_decay:
        adam = optax.adamw(
            schedule, b1=b1, b2=b2, eps=config.adam_eps, weight_decay=config.weight_decay
        )
    else:
        adam = optax.adam(schedule, b1=b1, b2=b2, eps=config.adam_eps)
    return optax.chain(clip_by_global_norm(config.clip_norm), adam), schedule


def zero_subtree(tree, key: str, when):
    """Zeros every leaf under tree["model"][key] where `when` (a traced bool) holds.

    Used for fairseq's encoder_freezing_updates: the encoder gets neither gradient nor update
    (nor weight decay) during the first updates.
    """
    model = dict(tree["model"])
    model[key] = jax.tree.map(lambda x: jnp.where(when, jnp.zeros_like(x), x), model[key])
    return {**tree, "model": model}
