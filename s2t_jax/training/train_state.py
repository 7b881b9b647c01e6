"""The train state and the pure functions that move it: init, train_step, eval_step.

The state is a plain dict pytree, so Orbax saves it as is and shardings are one tree_map:
    step       int32 []    optimiser updates done (fairseq's num_updates)
    params     {"model": Speech2Text params, "ctc": {"kernel", "bias"}}   ("ctc" only when
               ctc_weight > 0: released checkpoints never see the CTC head)
    opt_state  optax state of clip + Adam
    accum      {"grads", "ntokens", "micro"}   only when update_freq > 1
    batch_stats  the Conformer's batch-norm running statistics   only for a model with batch
               norm: not trained by the optimiser, moved by every finite micro-batch (torch's
               train-mode BatchNorm), saved and restored with the rest of the state
The run's base rng is not in the state; `train_step(state, batch, rng)` folds the update count
(and the micro-batch index) into it, so every step's randomness (dropout, SpecAugment) is a
function of (seed, step) and a resumed run draws exactly what the uninterrupted one would.

Losses are sums over the global batch, divided by the target tokens of the whole update
(fairseq's sample_size): with update_freq > 1 gradients of micro-batches are summed and divided
once, so accumulation equals one big batch, as in fairseq.

A non-finite loss or gradient never reaches the params: the step checks the gradient norm
(a micro-batch with a non-finite loss poisons its gradients so the check sees it) and keeps
params and optimiser state as they were; `step` still advances (it counts update attempts, so
the data position and the host loop stay in step), Adam's own count does not.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from s2t_jax.models.layers import DTYPES, dense_init
from s2t_jax.models.params import fresh_batch_stats, init_params
from s2t_jax.training import optim
from s2t_jax.training.task import Task, loss_sums, loss_sums_and_stats


def use_unrolled_threefry_on_cpu() -> bool:
    """Lower threefry (dropout's RNG) on CPU as straight-line code instead of a rolled loop.

    Why: JAX lowers threefry2x32 on CPU as a while loop (smaller programs, faster compiles);
    its loop-carried arrays make each random bit cost several full-size memory passes, ~6x
    slower than the unrolled form accelerators use, and dropout draws ~100M bits per s2t-small
    step. The numbers are identical; only compile time grows slightly. This touches a private
    JAX hook, so it is best-effort: returns False (and changes nothing) if the hook moved.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf

        mlir.register_lowering(tf.threefry2x32_p, tf._threefry2x32_lowering_rule, platform="cpu")
        return True
    except (ImportError, AttributeError):
        return False


# Batch keys that go to the device (the loader also returns host-only "index" and "bad").
DEVICE_KEYS = ("features", "attention_mask", "prev_tokens", "target")


# --------------------------------------------------------------------------------------------
# Init
# --------------------------------------------------------------------------------------------


def init_state(task: Task, rng) -> dict:
    cfg = task.model_config
    k_model, k_ctc = jax.random.split(rng)
    params = {"model": init_params(cfg, k_model)}
    if task.ctc_weight > 0:
        dtype = DTYPES[cfg.param_dtype]
        params["ctc"] = {
            "kernel": dense_init(k_ctc, (cfg.d_model, cfg.vocab_size), dtype),
            "bias": jnp.zeros((cfg.vocab_size,), dtype),
        }
    state = {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": task.tx.init(params)}
    stats = fresh_batch_stats(cfg)
    if stats is not None:
        state["batch_stats"] = stats
    if task.update_freq > 1:
        state["accum"] = {
            "grads": jax.tree.map(jnp.zeros_like, params),
            "ntokens": jnp.zeros((), jnp.float32),
            "micro": jnp.zeros((), jnp.int32),
        }
    return state


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


def _apply_update(task: Task, state, grad_sums, ntokens):
    """Normalise, freeze, clip + Adam, apply. -> (state with step + 1, grad norm, finite).

    When the gradient norm is not finite, params and optimiser state stay as they were.
    """
    grads = jax.tree.map(lambda g: g / jnp.maximum(ntokens, 1.0), grad_sums)
    frozen = state["step"] < task.encoder_freezing_updates
    if task.encoder_freezing_updates > 0:
        grads = optim.zero_subtree(grads, "encoder", frozen)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(grad_norm)
    updates, opt_state = task.tx.update(grads, state["opt_state"], state["params"])
    if task.encoder_freezing_updates > 0:
        updates = optim.zero_subtree(updates, "encoder", frozen)
    params = optax.apply_updates(state["params"], updates)

    def keep(new, old):
        return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

    new = {
        **state,
        "step": state["step"] + 1,
        "params": keep(params, state["params"]),
        "opt_state": keep(opt_state, state["opt_state"]),
    }
    return new, grad_norm, finite


def train_step(task: Task, state, batch, rng):
    """One micro-batch: (state, batch, base rng) -> (state, metrics). Pure; jit it once.

    metrics are the batch's loss sums plus grad_norm, lr, `updated` (1 when this call
    ended an update; with update_freq > 1 only every update_freq-th call does), `finite` (0
    when this batch's loss, or the update it ended, was not finite) and `skipped` (1 when the
    update it ended was not applied because of that).
    """
    step = state["step"]
    accum = state.get("accum")
    micro = accum["micro"] if accum is not None else 0
    key = jax.random.fold_in(jax.random.fold_in(rng, step), micro)

    def loss_fn(params):
        sums, stats = loss_sums_and_stats(
            task, params, batch, key, train=True, batch_stats=state.get("batch_stats")
        )
        return sums["loss"], (sums, stats)

    grad_sums, (sums, stats) = jax.grad(loss_fn, has_aux=True)(state["params"])
    loss_finite = jnp.isfinite(sums["loss"])
    if stats is not None:  # a non-finite batch must not move the running statistics either
        old = state["batch_stats"]
        state = {
            **state,
            "batch_stats": jax.tree.map(lambda n, o: jnp.where(loss_finite, n, o), stats, old),
        }
    # A non-finite loss with finite gradients (e.g. an underflowed probability) must not
    # update either: poison the gradients so the norm check below sees it.
    grad_sums = jax.tree.map(lambda g: jnp.where(loss_finite, g, jnp.nan), grad_sums)
    if accum is None:
        state, grad_norm, finite = _apply_update(task, state, grad_sums, sums["ntokens"])
        updated = jnp.ones((), jnp.float32)
    else:
        grad_sums = jax.tree.map(jnp.add, accum["grads"], grad_sums)
        ntokens = accum["ntokens"] + sums["ntokens"]

        def apply(_):
            new, norm, finite = _apply_update(task, state, grad_sums, ntokens)
            zeros = jax.tree.map(jnp.zeros_like, accum)
            return {**new, "accum": zeros}, norm, finite

        def wait(_):
            acc = {"grads": grad_sums, "ntokens": ntokens, "micro": micro + 1}
            return {**state, "accum": acc}, jnp.zeros((), jnp.float32), jnp.ones((), bool)

        state, grad_norm, finite = lax.cond(micro + 1 >= task.update_freq, apply, wait, None)
        updated = (micro + 1 >= task.update_freq).astype(jnp.float32)
    metrics = {
        **sums,
        "grad_norm": grad_norm,
        "lr": task.schedule(step),
        "updated": updated,
        "finite": (finite & loss_finite).astype(jnp.float32),
        "skipped": updated * (1.0 - finite.astype(jnp.float32)),
    }
    return state, metrics


def eval_params(state):
    """What evaluation reads of a state (or of its sharding tree, which has the same layout):
    `params`, with a batch-norm model's "model" entry as its Flax variables {"params",
    "batch_stats"} so the running statistics go wherever the weights go (loss, generate)."""
    if "batch_stats" not in state:
        return state["params"]
    model = {"params": state["params"]["model"], "batch_stats": state["batch_stats"]}
    return {**state["params"], "model": model}


def eval_step(task: Task, params, batch):
    """Loss sums without dropout or SpecAugment; `params` as `eval_params` gives them."""
    return loss_sums(task, params, batch, jax.random.key(0), train=False)
