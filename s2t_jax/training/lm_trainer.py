"""`train_lm(config, workdir)`: the language model's training loop (train.py with configs/lm.py).

The same pieces as the speech trainer, smaller: text from data/lm_text.py in static-shape
buckets, the recipe's optimiser (training/optim.py), Orbax train checkpoints in
`<workdir>/checkpoints` (state + the number of batches consumed, so a rerun resumes where it
stopped, on the same batches), metrics in `<workdir>/metrics.jsonl`, and at the end the model
in our LM format at `<workdir>/lm` (lm_config.json + params/), which `generate(lm=...)`,
`eval.py --lm` and `transcribe --lm` read. The loss is the summed cross-entropy over target
tokens divided by their count, as fairseq's `cross_entropy` criterion reports it (in nats
here; valid perplexity is exp of it).

One device: an LM for shallow fusion is small; the speech trainer is the one that shards.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from s2t_jax.checkpoints.lm import save_lm
from s2t_jax.checkpoints.orbax_io import TrainCheckpointer
from s2t_jax.data import lm_text
from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.vocab import PAD
from s2t_jax.models.lm import LMConfig, TransformerLM
from s2t_jax.training import optim
from s2t_jax.training.metrics_writer import MetricWriter


def lm_config_from(config, vocab_size: int) -> LMConfig:
    fields = dict(config.model)
    fields["vocab_size"] = vocab_size
    return LMConfig(**fields)


def _loss(module, params, batch, rng, train: bool):
    logits = module.apply(
        {"params": params}, batch["inputs"], deterministic=not train, rngs={"dropout": rng}
    )  # [B, L, V] f32
    mask = batch["targets"] != PAD
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    total = jnp.sum(jnp.where(mask, nll, 0.0))
    return total, mask.sum().astype(jnp.float32)


def train_lm(config, workdir: str) -> dict:
    """Trains the LM per `config`; returns {"step", "train_loss", "valid_loss", "valid_ppl"}."""
    workdir = os.path.abspath(workdir)
    data = DataConfig.load(config.data.root, config.data.config_yaml)
    encoder = data.target_encoder()
    lm_config = lm_config_from(config, encoder.vocab_size)
    buckets = tuple(int(b) for b in config.data.buckets)
    limit = min(max(buckets), lm_config.max_positions)
    train = lm_text.read_sentences(_paths(config.data.train_text, data.root), encoder, limit)
    plan = lm_text.plan_batches(train, buckets, config.max_tokens)
    valid = None
    if config.data.valid_text:
        valid = lm_text.read_sentences(_paths(config.data.valid_text, data.root), encoder, limit)
    logging.info(
        "LM: %d sentences in %d batches (skipped %s), vocabulary %d",
        len(train.ids),
        len(plan),
        train.skipped,
        lm_config.vocab_size,
    )

    module = TransformerLM(lm_config)
    tx, schedule = optim.make_optimizer(config)

    def init(rng):
        ids = jnp.zeros((1, buckets[0]), jnp.int32)
        params = module.init(rng, ids)["params"]
        return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state, batch, rng):
        rng = jax.random.fold_in(rng, state["step"])
        grad_fn = jax.value_and_grad(lambda p: _loss(module, p, batch, rng, True), has_aux=True)
        (total, ntokens), grads = grad_fn(state["params"])
        grads = jax.tree.map(lambda g: g / jnp.maximum(ntokens, 1.0), grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1}
        return new, {"loss_sum": total, "ntokens": ntokens, "lr": schedule(state["step"])}

    @jax.jit
    def eval_step(params, batch):
        return _loss(module, params, batch, jax.random.key(0), False)

    checkpoints = TrainCheckpointer(
        os.path.join(workdir, "checkpoints"),
        keep_last=config.keep_last_checkpoints,
        keep_best=0,
        async_save=False,
        cleanup_tmp=True,
    )
    abstract = jax.eval_shape(init, jax.random.key(0))
    latest = checkpoints.latest_step()
    if latest is not None:
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=_one_device()), abstract
        )
        state, meta = checkpoints.restore(latest, target)
        consumed = int(meta["consumed"])
        logging.info("resumed the LM from step %d (batch %d)", latest, consumed)
    else:
        state, consumed = jax.jit(init)(jax.random.key(config.seed)), 0
    rng = jax.random.key(config.seed + 1)
    writer = MetricWriter(workdir)
    step = int(state["step"])
    window, started = [], time.perf_counter()
    last_train = last_valid = None

    def validate():
        if valid is None:
            return None
        total = count = 0.0
        for length, rows in lm_text.plan_batches(valid, buckets, config.max_tokens):
            s, n = eval_step(state["params"], lm_text.make_batch(valid, length, rows))
            total, count = total + float(s), count + float(n)
        out = {"loss": total / count, "ppl": float(np.exp(total / count))}
        writer.write(step, "valid", out)
        return out

    try:
        while step < config.max_update:
            epoch, k = divmod(consumed, len(plan))
            length, rows = plan[lm_text.epoch_order(len(plan), config.seed, epoch)[k]]
            batch = {k: jnp.asarray(v) for k, v in lm_text.make_batch(train, length, rows).items()}
            state, metrics = train_step(state, batch, rng)
            consumed, step = consumed + 1, step + 1
            window.append(metrics)
            if step % config.log_interval == 0 or step == config.max_update:
                fetched = jax.device_get(window)
                tokens = sum(float(m["ntokens"]) for m in fetched)
                loss = sum(float(m["loss_sum"]) for m in fetched) / max(tokens, 1.0)
                if not np.isfinite(loss):
                    raise FloatingPointError(f"LM loss is {loss} at step {step}")
                seconds = time.perf_counter() - started
                last_train = {"loss": loss, "lr": float(fetched[-1]["lr"]), "wps": tokens / seconds}
                writer.write(step, "train", last_train)
                window, started = [], time.perf_counter()
            if step % config.save_interval_updates == 0 or step == config.max_update:
                last_valid = validate()
                checkpoints.save(step, state, {"consumed": consumed, "seed": config.seed})
    finally:
        checkpoints.close()
    save_lm(os.path.join(workdir, "lm"), lm_config, jax.device_get(state["params"]))
    writer.close()
    return {
        "step": step,
        "train_loss": last_train and last_train["loss"],
        "valid_loss": last_valid and last_valid["loss"],
        "valid_ppl": last_valid and last_valid["ppl"],
    }


def _paths(spec: str, root: str) -> list[str]:
    return [p if os.path.isabs(p) else os.path.join(root, p) for p in spec.split(",") if p]


def _one_device():
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
