"""What a train step computes: the model, the optimiser and the criterion, from the config.

`Task` is the static half of training (a frozen dataclass the jitted steps close over);
`loss_sums` is the criterion as fairseq's label_smoothed_cross_entropy (+ CTC) computes it,
summed over the padded batch. The state and the steps that move it are in train_state.py.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from s2t_jax.data.data_config import DataConfig
from s2t_jax.frontend.specaugment import POLICIES, SpecAugmentPolicy, spec_augment
from s2t_jax.models.config import Speech2TextConfig
from s2t_jax.models.layers import DTYPES
from s2t_jax.models.model import Speech2Text
from s2t_jax.models.params import as_variables
from s2t_jax.training import losses, optim


def model_config_from(config, vocab_size: int) -> Speech2TextConfig:
    """Speech2TextConfig from `config.model`; vocab_size <= 0 there means "the dictionary's"."""
    fields = dict(config.model)
    fields["conv_kernel_sizes"] = tuple(fields.get("conv_kernel_sizes", (5, 5)))
    if fields.get("vocab_size", 0) <= 0:
        fields["vocab_size"] = vocab_size
    elif fields["vocab_size"] != vocab_size:
        raise ValueError(
            f"config.model.vocab_size={fields['vocab_size']} but the dictionary has "
            f"{vocab_size} entries; set it to {vocab_size} or to -1"
        )
    return Speech2TextConfig(**fields)


# Task fields the training config holds under the same names.
CONFIG_FIELDS = (
    "label_smoothing",
    "ignore_prefix_size",
    "ctc_weight",
    "update_freq",
    "encoder_freezing_updates",
)


@dataclasses.dataclass(frozen=True)
class Task:
    """What the step functions close over: the model, the optimiser and the criterion."""

    model_config: Speech2TextConfig
    tx: Any
    schedule: Any
    label_smoothing: float = 0.1
    ignore_prefix_size: int = 0
    ctc_weight: float = 0.0
    update_freq: int = 1
    encoder_freezing_updates: int = 0
    specaugment: SpecAugmentPolicy | None = None
    # Sharding of batch-major activations (NamedSharding of the batch spec) or None: pins the
    # encoder output and the logits to batch sharding, so FSDP gathers weights rather than
    # resharding activations.
    activation_sharding: Any = None

    @property
    def module(self) -> Speech2Text:
        return Speech2Text(self.model_config)

    def constrain(self, x):
        if self.activation_sharding is None:
            return x
        return lax.with_sharding_constraint(x, self.activation_sharding)

    @classmethod
    def from_config(cls, config, model_config, specaugment=None, activation_sharding=None) -> Task:
        tx, schedule = optim.make_optimizer(config)
        return cls(
            model_config,
            tx,
            schedule,
            specaugment=specaugment,
            activation_sharding=activation_sharding,
            **{name: getattr(config, name) for name in CONFIG_FIELDS},
        )


def specaugment_policy(config, data: DataConfig, subset: str) -> SpecAugmentPolicy | None:
    """config.specaugment: "" = as the data config says, "none" = off, or a policy name."""
    choice = config.specaugment
    if choice == "":
        return data.specaugment(subset, is_train=True)
    if choice == "none":
        return None
    if choice not in POLICIES:
        raise ValueError(f"specaugment={choice!r}: expected '', 'none' or one of {list(POLICIES)}")
    return POLICIES[choice]


def loss_sums(task: Task, params, batch, rng, train: bool, batch_stats=None) -> dict:
    """Summed criterion over a padded batch (see losses.py); `train` turns on dropout + SpecAug.

    `batch_stats` are a Conformer's batch-norm running statistics (None for a model without
    batch norm). In training they are updated from the batch: use `loss_sums_and_stats` to get
    the new ones; here they are dropped.
    """
    return loss_sums_and_stats(task, params, batch, rng, train, batch_stats)[0]


def loss_sums_and_stats(task: Task, params, batch, rng, train: bool, batch_stats=None):
    """-> (summed criterion, batch_stats after this batch). Batch norm normalises with the
    batch's statistics and moves the running ones when `train` (torch's BatchNorm in train
    mode), and uses the running ones otherwise; without batch norm the stats stay None."""
    cfg = task.model_config
    module = task.module
    feats, mask = batch["features"], batch["attention_mask"]  # [B, T, F], [B, T]
    k_spec, k_enc, k_dec = jax.random.split(rng, 3)
    if train and task.specaugment is not None:
        feats = spec_augment(feats, mask.sum(-1), k_spec, task.specaugment)
    variables = dict(as_variables(params["model"]))  # eval passes {"params", "batch_stats"}
    if batch_stats is not None:
        variables["batch_stats"] = batch_stats
    encode = functools.partial(
        module.apply,
        variables,
        feats.astype(DTYPES[cfg.dtype]),
        mask,
        not train,
        method=Speech2Text.encode,
        rngs={"dropout": k_enc},
    )
    if train and batch_stats is not None:
        (enc, enc_mask), mutated = encode(mutable=["batch_stats"])
        batch_stats = mutated["batch_stats"]
    else:
        enc, enc_mask = encode()
    enc = task.constrain(enc)  # [B, S, D]
    logits = module.apply(
        variables,
        batch["prev_tokens"],
        enc,
        enc_mask,
        None,
        not train,
        method=Speech2Text.decode,
        rngs={"dropout": k_dec},
    )
    logits = task.constrain(logits)  # [B, L, V] f32
    target = batch["target"]  # [B, L]
    sums = losses.label_smoothed_nll_loss(
        logits, target, task.label_smoothing, cfg.pad_token_id, task.ignore_prefix_size
    )
    sums["ntokens"] = jnp.sum(target != cfg.pad_token_id).astype(jnp.float32)
    sums["nsentences"] = jnp.sum(mask.sum(-1) > 0).astype(jnp.float32)
    sums["frames"] = jnp.sum(mask).astype(jnp.float32)
    if task.ctc_weight > 0:
        head = params["ctc"]
        ctc_logits = enc @ head["kernel"].astype(enc.dtype) + head["bias"].astype(enc.dtype)
        ctc = losses.ctc_loss(
            ctc_logits,
            enc_mask,
            target,
            cfg.pad_token_id,
            cfg.eos_token_id,
            blank_id=cfg.bos_token_id,
            ignore_prefix_size=task.ignore_prefix_size,
        )
        sums["ctc_loss"] = ctc
        sums["loss"] = sums["loss"] + task.ctc_weight * ctc
    return sums, batch_stats
