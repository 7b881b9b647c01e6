"""Params of the Flax model as plain pytrees: fresh ones, their abstract shapes, their size.

Why a module of its own: checkpoint conversion needs the expected shapes (to check every tensor
it reads) and the user API needs fresh params; both sit above the model, so this lives with it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from s2t_jax.models.config import Speech2TextConfig
from s2t_jax.models.model import Speech2Text


def init_params(config: Speech2TextConfig, rng, with_lm_head: bool = True):
    """Fresh params. Inits on an 8-frame dummy input: shapes do not depend on lengths."""
    module = Speech2Text(config, with_lm_head=with_lm_head)
    feats = jnp.zeros((1, 8, config.input_feat_per_channel * config.input_channels))
    ids = jnp.zeros((1, 2), jnp.int32)
    params = module.init(rng, feats, None, ids)["params"]
    embed = params["decoder"]["embed_tokens"]["embedding"]
    # The pad row of the token embedding is zero, as nn.Embedding(padding_idx=...) makes it.
    params["decoder"]["embed_tokens"]["embedding"] = embed.at[config.pad_token_id].set(0)
    return params


def abstract_params(config: Speech2TextConfig, with_lm_head: bool = True):
    """Params shapes and dtypes without allocating them (jax.eval_shape of init)."""
    return jax.eval_shape(
        functools.partial(init_params, config, with_lm_head=with_lm_head), jax.random.key(0)
    )


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def as_variables(tree) -> dict:
    """Flax variables from a model's weights: a params tree as it is, or the
    {"params", "batch_stats"} of a model with batch norm (the Conformer encoder). Every apply
    of the speech model goes through this, so both kinds of model take one path."""
    if isinstance(tree, dict) and "params" in tree:
        return tree
    return {"params": tree}


def fresh_batch_stats(config: Speech2TextConfig):
    """An untrained model's batch-norm statistics, or None for a model without batch norm."""
    if config.encoder_type != "conformer":
        return None
    from s2t_jax.models.conformer import fresh_batch_stats as conformer_stats

    return conformer_stats(config)
