"""The pure forward passes behind the user classes (modeling.py), with transformers' extras.

Per-layer hidden states, attention weights and the decoder's K/V are read off the Flax model with
`nn.intercept_methods` while it runs, so the network itself (models/) carries no output flags.
Each function here is jitted by modeling.py once per input shape and set of flags.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from s2t_jax.models.attention import masked_softmax
from s2t_jax.models.params import as_variables
from s2t_jax.models.subsampler import length_mask, subsampled_lengths

_LAYER = re.compile(r"layers_(\d+)$")


class _Recorder:
    """Collects, while the model runs, what transformers' output hooks collect: each side's
    hidden states (the first layer's input, then every layer's output), attention weights, and
    the decoder layers' self- and cross-attention K/V."""

    def __init__(self, hidden: bool, attentions: bool, cache: bool):
        self.hidden, self.attentions, self.cache = hidden, attentions, cache
        self.states = {"encoder": [], "decoder": []}
        self.weights = {"encoder": [], "self_attn": [], "encoder_attn": []}
        self.kv = {}  # (layer, "self_attn" | "encoder_attn") -> (k, v) [batch, heads, len, hd]

    def __call__(self, next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path, method = context.module.path, context.method_name
        if len(path) < 2 or not _LAYER.match(path[1]):
            return out
        side = path[0]
        if self.hidden and len(path) == 2 and method == "__call__":
            if not self.states[side]:
                self.states[side].append(args[0])  # the embeddings: the first layer's input
            self.states[side].append(out)
        elif len(path) == 3 and method == "attend" and self.attentions:
            q, k, _, mask = args[:4]
            key = "encoder" if side == "encoder" else path[2]
            self.weights[key].append(attention_weights(q, k, mask))
        elif len(path) == 3 and method == "key_value" and self.cache and side == "decoder":
            layer = int(_LAYER.match(path[1]).group(1))
            self.kv[layer, path[2]] = tuple(x.transpose(0, 2, 1, 3) for x in out)
        return out


def attention_weights(q, k, mask):
    """The softmax weights `attend` uses: q (scaled), k [batch, len, heads, hd] -> float32
    [batch, heads, q_len, k_len], masked positions exactly 0 as in transformers' eager path."""
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)  # [batch, heads, q, k]
    return masked_softmax(scores, True if mask is None else mask, jnp.float32)


def frame_mask(config, attention_mask, frames: int):
    """[batch, frames_in] input mask -> [batch, frames] bool after subsampling (all True
    without a mask), as transformers' _get_feature_vector_attention_mask."""
    if attention_mask is None:
        return None
    lengths = subsampled_lengths(attention_mask.sum(-1).astype(jnp.int32), config.num_conv_layers)
    return length_mask(lengths, frames)


def _tied_states(states, last):
    """transformers replaces the last recorded state with the final (layer-normed) output."""
    return tuple(states[:-1]) + (last,) if states else ()


def forward(
    module,
    params,
    feats,
    mask,
    enc,
    cross_mask,
    dec_ids,
    dec_mask,
    labels,
    *,
    hidden: bool,
    attentions: bool,
    cache: bool,
):
    """One teacher-forced pass -> dict of the outputs asked for.

    feats [batch, frames, feat] and mask [batch, frames] (or None) are encoded, unless `enc`
    [batch, src, d_model] is given with its `cross_mask` [batch, src] bool (None: attend to
    every frame); dec_ids, dec_mask [batch, tgt]; labels [batch, tgt], -100 ignored, or None.
    """
    cfg = module.config
    rec = _Recorder(hidden, attentions, cache)

    def run(m):
        if enc is None:
            e, enc_mask = m.encode(feats, mask)
            # As transformers does: without a frame mask there is no cross-attention mask.
            cross = None if mask is None else enc_mask
        else:
            e, cross = enc, cross_mask
            enc_mask = jnp.ones(e.shape[:2], bool) if cross is None else cross
        dec_h = m.decoder(dec_ids, e, cross, dec_mask)  # [batch, tgt, d_model]
        out = m.logits(dec_h) if m.with_lm_head else dec_h
        return out, dec_h, e, enc_mask

    with nn.intercept_methods(rec):
        out, dec_h, e, enc_mask = module.apply(as_variables(params), method=run)
    result = {"out": out, "dec_h": dec_h, "enc": e, "enc_mask": enc_mask}
    if labels is not None:
        result["loss"] = cross_entropy(out, labels)
    if hidden:
        result["decoder_hidden_states"] = _tied_states(rec.states["decoder"], dec_h)
        if enc is None:
            result["encoder_hidden_states"] = _tied_states(rec.states["encoder"], e)
    if attentions:
        result["decoder_attentions"] = tuple(rec.weights["self_attn"])
        result["cross_attentions"] = tuple(rec.weights["encoder_attn"])
        if enc is None:
            result["encoder_attentions"] = tuple(rec.weights["encoder"])
    if cache:
        result["cache"] = tuple(
            rec.kv[i, "self_attn"] + rec.kv[i, "encoder_attn"] for i in range(cfg.decoder_layers)
        )
    return result


def cross_entropy(logits, labels):
    """transformers' CrossEntropyLoss(): the mean over positions whose label is not -100."""
    valid = labels != -100
    nll = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.where(valid, labels, 0)
    )  # [batch, tgt]
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.sum(valid)


def shift_tokens_right(labels, pad_token_id: int, decoder_start_token_id: int):
    """Labels [batch, tgt] -> decoder inputs: start token first, -100 replaced by pad."""
    shifted = jnp.concatenate(
        [jnp.full_like(labels[:, :1], decoder_start_token_id), labels[:, :-1]], axis=1
    )
    return jnp.where(shifted == -100, pad_token_id, shifted)


def encode(module, params, feats, mask, *, hidden, attentions):
    """The encoder alone -> dict: enc, enc_mask and the hidden states / weights asked for."""
    rec = _Recorder(hidden, attentions, False)
    with nn.intercept_methods(rec):
        e, enc_mask = module.apply(as_variables(params), feats, mask, method=type(module).encode)
    result = {"enc": e, "enc_mask": enc_mask}
    if hidden:
        result["hidden_states"] = _tied_states(rec.states["encoder"], e)
    if attentions:
        result["attentions"] = tuple(rec.weights["encoder"])
    return result


def decode_with_past(module, params, past, dec_ids, cross_mask, with_head: bool):
    """Decoder tokens after a cache in transformers' layout, through the model's one cached
    step (models/decoder.py), one token at a time.

    past: per layer (self_k, self_v, cross_k, cross_v), each [batch, heads, len, hd];
    dec_ids [batch, new]; cross_mask [batch, src] bool. -> (logits or hidden
    [batch, new, ...], the cache extended by the new tokens, same layout).
    """
    seen, new = past[0][0].shape[2], dec_ids.shape[1]
    grow = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, new), (0, 0)))  # noqa: E731
    state = {
        "self_k": tuple(grow(layer[0]) for layer in past),
        "self_v": tuple(grow(layer[1]) for layer in past),
        "cross_k": tuple(layer[2].transpose(0, 1, 3, 2) for layer in past),  # [b, h, hd, src]
        "cross_v": tuple(layer[3] for layer in past),
        "enc_mask": cross_mask,
    }

    def step(m, tokens, index, state):
        h, state = m.decoder.step(tokens, index, state, seen + new + 1)
        return (m.logits(h) if with_head else h), state

    outs = []
    for t in range(new):
        out, state = module.apply(as_variables(params), dec_ids[:, t], seen + t, state, method=step)
        outs.append(out)
    cache = tuple(
        (sk, sv, ck.transpose(0, 1, 3, 2), cv)
        for sk, sv, ck, cv in zip(
            state["self_k"], state["self_v"], state["cross_k"], state["cross_v"]
        )
    )
    return jnp.stack(outs, axis=1), cache


def to_array(x, dtype=None):
    """A numpy / jax / torch (CPU) array -> jax array."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return jnp.asarray(x, dtype)


def tree_to_arrays(tree):
    return jax.tree.map(to_array, tree)


def split_encoder_outputs(encoder_outputs):
    """A given encoding -> (last hidden [batch, src, d_model] or None, the extras transformers
    passes through: encoder_hidden_states, encoder_attentions)."""
    if encoder_outputs is None:
        return None, {}
    if hasattr(encoder_outputs, "last_hidden_state"):
        parts = (
            encoder_outputs.last_hidden_state,
            getattr(encoder_outputs, "hidden_states", None),
            getattr(encoder_outputs, "attentions", None),
        )
    else:
        parts = tuple(encoder_outputs) + (None, None)
    extras = {"encoder_hidden_states": parts[1], "encoder_attentions": parts[2]}
    return to_array(parts[0]), {k: v for k, v in extras.items() if v is not None}


def select_states(states, selection, num_hidden_layers: int):
    """transformers' output_hidden_states=int or [ints]: only those indices, None elsewhere.

    As transformers does, negative indices count from config.num_hidden_layers + 1 (the
    encoder's count) on both sides, even when the decoder has another number of layers."""
    if isinstance(selection, bool) or selection is None:
        return states
    picked = [selection] if isinstance(selection, int) else list(selection)
    n = num_hidden_layers + 1
    keep = {i % n for i in picked if -n <= i < n}
    return tuple(s if i in keep else None for i, s in enumerate(states))
