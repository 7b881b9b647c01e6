"""A Transformer language model over the speech model's target vocabulary, for shallow fusion.

The shape is fairseq's `transformer_lm`: scaled token embeddings plus sinusoidal positions (the
same table as the decoder's), decoder layers without cross-attention (pre-norm, which fairseq's
`base_lm_architecture` forces; post-norm is kept for other checkpoints), a final layer norm
unless `no_decoder_final_norm`, and an output projection, tied to the embeddings or not. A sentence is fed as the speech decoder is fed,
`</s> w1 ... wn`, and predicts `w1 ... wn </s>`, so the LM scores exactly the prefixes a search
builds. The cached step uses the decoder's cache layout (kv_cache.py), so the searches grow and
reorder both caches with the same helpers.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax.numpy as jnp
from flax import linen as nn

from s2t_jax.models.attention import MultiHeadAttention
from s2t_jax.models.layers import (
    ACTIVATIONS,
    DTYPES,
    FeedForward,
    TokenEmbedding,
    dtypes,
    layer_norm,
)

LM_CONFIG_FILE = "lm_config.json"
_LIMITS = {"vocab_size": 1 << 24, "layers": 1000, "d_model": 1 << 16, "ffn_dim": 1 << 20}


@dataclasses.dataclass(frozen=True)
class LMConfig:
    vocab_size: int
    d_model: int = 512
    ffn_dim: int = 2048
    layers: int = 6
    attention_heads: int = 8
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation_function: str = "relu"
    normalize_before: bool = True  # fairseq's transformer_lm forces pre-norm
    final_layer_norm: bool = True  # fairseq: off with --no-decoder-final-norm
    share_input_output_embed: bool = False
    scale_embedding: bool = True
    max_positions: int = 1024
    pad_token_id: int = 1
    eos_token_id: int = 2
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        errors = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                errors.append(f"{f.name}={value!r} must be an integer")
            elif f.type == "int" and not 0 <= value <= _LIMITS.get(f.name, 1 << 24):
                errors.append(f"{f.name}={value} is outside [0, {_LIMITS.get(f.name, 1 << 24)}]")
        if not errors:
            if self.vocab_size < 3 or self.layers < 1 or self.d_model < 2:
                errors.append("vocab_size >= 3, layers >= 1 and d_model >= 2 are required")
            elif self.attention_heads < 1 or self.d_model % self.attention_heads:
                errors.append(
                    f"d_model={self.d_model} must divide into {self.attention_heads} heads"
                )
        if self.activation_function not in ACTIVATIONS:
            errors.append(f"activation_function={self.activation_function!r} is not supported")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                errors.append(f"{name}={getattr(self, name)!r} must be one of {sorted(DTYPES)}")
        if errors:
            raise ValueError("LMConfig: " + "; ".join(errors))

    def replace(self, **changes) -> LMConfig:
        return dataclasses.replace(self, **changes)

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, LM_CONFIG_FILE), "w") as f:
            json.dump(dataclasses.asdict(self), f, indent=2, sort_keys=True)

    @classmethod
    def load(cls, directory: str) -> LMConfig:
        path = os.path.join(directory, LM_CONFIG_FILE)
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a readable LM config ({e})") from e
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown LM config fields {unknown}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e


class LMLayer(nn.Module):
    config: LMConfig

    def setup(self):
        cfg = self.config
        self.self_attn = MultiHeadAttention(cfg, cfg.attention_heads)
        self.self_attn_layer_norm = layer_norm(cfg, "self_attn_layer_norm")
        self.ffn = FeedForward(cfg, cfg.ffn_dim)
        self.final_layer_norm = layer_norm(cfg, "final_layer_norm")
        self.dropout = nn.Dropout(cfg.dropout)

    def _block(self, x, norm, fn, deterministic):
        """Residual block, pre- or post-norm."""
        if self.config.normalize_before:
            return x + self.dropout(fn(norm(x)), deterministic=deterministic)
        return norm(x + self.dropout(fn(x), deterministic=deterministic))

    def __call__(self, x, mask, deterministic: bool):
        """x [batch, len, d_model]; mask [batch or 1, 1, len, len] bool (causal, pad keys)."""
        x = self._block(
            x,
            self.self_attn_layer_norm,
            lambda h: self.self_attn(h, h, mask, deterministic),
            deterministic,
        )
        return self._block(
            x, self.final_layer_norm, lambda h: self.ffn(h, deterministic), deterministic
        )

    def step(self, x, index, self_k, self_v, self_mask):
        """x [rows, 1, d_model]; self_k, self_v [rows, heads, length, hd] (kv_cache layout)."""

        def attend(h):
            nonlocal self_k, self_v
            out, self_k, self_v = self.self_attn.cached(h, index, self_k, self_v, self_mask)
            return out

        x = self._block(x, self.self_attn_layer_norm, attend, True)
        x = self._block(x, self.final_layer_norm, lambda h: self.ffn(h, True), True)
        return x, self_k, self_v


class TransformerLM(nn.Module):
    """ids -> next-token logits; `step` is the cached form the searches call."""

    config: LMConfig

    def setup(self):
        cfg = self.config
        dtype, param_dtype = dtypes(cfg)
        self.embed_tokens = TokenEmbedding(cfg, name="embed_tokens")
        self.layers = [LMLayer(cfg, name=f"layers_{i}") for i in range(cfg.layers)]
        if cfg.final_layer_norm:
            self.layer_norm = layer_norm(cfg, "layer_norm")
        if not cfg.share_input_output_embed:
            self.output_projection = nn.Dense(
                cfg.vocab_size,
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=nn.initializers.normal(cfg.d_model**-0.5),
                name="output_projection",
            )
        self.dropout = nn.Dropout(cfg.dropout)

    def _embed(self, ids, offset=0, max_position=None):
        return self.embed_tokens(ids, offset, max_position)

    def _logits(self, x):
        if self.config.final_layer_norm:
            x = self.layer_norm(x)
        if self.config.share_input_output_embed:
            out = self.embed_tokens.attend(x)
        else:
            out = self.output_projection(x)
        return out.astype(jnp.float32)

    def __call__(self, ids, deterministic: bool = True):
        """Teacher-forced: ids [batch, len] -> logits f32 [batch, len, vocab]. Pad keys are
        masked, so right-padded rows score as if alone."""
        x = self.dropout(self._embed(ids), deterministic=deterministic)
        length = ids.shape[1]
        causal = jnp.tril(jnp.ones((length, length), bool))[None, None]  # [1, 1, len, len]
        mask = causal & (ids != self.config.pad_token_id)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask, deterministic)
        return self._logits(x)

    def init_cache(self, rows: int, length: int):
        """Self-attention K/V for `rows` hypotheses and `length` positions (kv_cache layout)."""
        cfg = self.config
        head_dim = cfg.d_model // cfg.attention_heads
        shape = (rows, cfg.attention_heads, length, head_dim)
        dtype = DTYPES[cfg.dtype]
        zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.layers))
        return {"self_k": zeros, "self_v": zeros}

    def step(self, tokens, index, cache, max_length: int):
        """tokens [rows] at position `index` -> (logits f32 [rows, vocab], cache)."""
        length = cache["self_k"][0].shape[2]
        x = self._embed(tokens[:, None], offset=index, max_position=max_length)  # [rows, 1, d]
        self_mask = (jnp.arange(length) <= index)[None, None, None, :]
        self_k, self_v = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer.step(x, index, cache["self_k"][i], cache["self_v"][i], self_mask)
            self_k.append(k)
            self_v.append(v)
        return self._logits(x)[:, 0], {"self_k": tuple(self_k), "self_v": tuple(self_v)}
