"""The text decoder: teacher-forced over a whole target, or one step at a time with a KV cache.

The cache is a plain pytree whose every leaf is batch-major, so beam search can gather it by
beam index with one tree_map:
  self_k, self_v:   tuple over layers of [batch, max_len, heads, head_dim] (preallocated)
  cross_k, cross_v: tuple over layers of [batch, src_len, heads, head_dim] (projected once)
  enc_mask:         [batch, src_len] bool
"""

import math

import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from s2t_jax.models.attention import MultiHeadAttention
from s2t_jax.models.layers import FeedForward, dtypes, layer_norm
from s2t_jax.models.positions import sinusoidal_positions


class DecoderLayer(nn.Module):
    config: object

    def setup(self):
        cfg = self.config
        self.self_attn = MultiHeadAttention(cfg, cfg.decoder_attention_heads)
        self.self_attn_layer_norm = layer_norm(cfg, "self_attn_layer_norm")
        self.encoder_attn = MultiHeadAttention(cfg, cfg.decoder_attention_heads)
        self.encoder_attn_layer_norm = layer_norm(cfg, "encoder_attn_layer_norm")
        self.ffn = FeedForward(cfg, cfg.decoder_ffn_dim)
        self.final_layer_norm = layer_norm(cfg, "final_layer_norm")
        self.dropout = nn.Dropout(cfg.dropout)

    def _cross_and_ffn(self, x, cross_k, cross_v, cross_mask, deterministic):
        h = self.encoder_attn_layer_norm(x)
        h = self.encoder_attn.attend(
            self.encoder_attn.query(h), cross_k, cross_v, cross_mask, deterministic
        )
        x = x + self.dropout(h, deterministic=deterministic)
        h = self.ffn(self.final_layer_norm(x), deterministic)
        return x + self.dropout(h, deterministic=deterministic)

    def __call__(self, x, self_mask, enc, cross_mask, deterministic: bool):
        """Teacher-forced: x [batch, tgt, d_model], enc [batch, src, d_model]."""
        h = self.self_attn_layer_norm(x)
        h = self.self_attn(h, h, self_mask, deterministic)
        x = x + self.dropout(h, deterministic=deterministic)
        cross_k, cross_v = self.encoder_attn.key_value(enc)
        return self._cross_and_ffn(x, cross_k, cross_v, cross_mask, deterministic)

    def cross_key_value(self, enc):
        return self.encoder_attn.key_value(enc)  # 2 x [batch, src, heads, head_dim]

    def step(self, x, index, self_k, self_v, cross_k, cross_v, cross_mask):
        """One cached step: x [batch, 1, d_model]; writes K/V at `index`, attends to <= index."""
        h = self.self_attn_layer_norm(x)
        k, v = self.self_attn.key_value(h)  # [batch, 1, heads, head_dim]
        self_k = lax.dynamic_update_slice(self_k, k.astype(self_k.dtype), (0, index, 0, 0))
        self_v = lax.dynamic_update_slice(self_v, v.astype(self_v.dtype), (0, index, 0, 0))
        mask = (jnp.arange(self_k.shape[1]) <= index)[None, None, None, :]  # [1, 1, 1, max_len]
        h = self.self_attn.attend(self.self_attn.query(h), self_k, self_v, mask, True)
        x = x + h
        return self._cross_and_ffn(x, cross_k, cross_v, cross_mask, True), self_k, self_v


class Decoder(nn.Module):
    config: object

    def setup(self):
        cfg = self.config
        dtype, param_dtype = dtypes(cfg)
        self.embed_tokens = nn.Embed(
            cfg.vocab_size,
            cfg.d_model,
            dtype=dtype,
            param_dtype=param_dtype,
            embedding_init=nn.initializers.normal(cfg.d_model**-0.5),
            name="embed_tokens",
        )
        self.layers = [DecoderLayer(cfg, name=f"layers_{i}") for i in range(cfg.decoder_layers)]
        self.layer_norm = layer_norm(cfg, "layer_norm")
        self.dropout = nn.Dropout(cfg.dropout)
        self.embed_scale = math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0

    def _embed(self, ids, offset=0, max_position=None):
        cfg = self.config
        x = self.embed_tokens(ids) * self.embed_scale  # [batch, len, d_model]
        pos = sinusoidal_positions(
            ids != cfg.pad_token_id, cfg.d_model, cfg.pad_token_id, offset, max_position
        )
        return x + pos.astype(x.dtype)

    def __call__(self, input_ids, enc, enc_mask, attention_mask=None, deterministic=True):
        """Teacher-forced: input_ids [batch, tgt] -> hidden [batch, tgt, d_model].

        enc_mask [batch, src] bool or None; attention_mask [batch, tgt] masks pad keys, as
        transformers' decoder_attention_mask does.
        """
        x = self.dropout(self._embed(input_ids), deterministic=deterministic)
        tgt = input_ids.shape[1]
        self_mask = jnp.tril(jnp.ones((tgt, tgt), bool))[None, None]  # [1, 1, tgt, tgt]
        if attention_mask is not None:
            self_mask = self_mask & attention_mask.astype(bool)[:, None, None, :]
        cross_mask = None if enc_mask is None else enc_mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, self_mask, enc, cross_mask, deterministic)
        return self.layer_norm(x)

    def init_cache(self, enc, enc_mask, max_length: int):
        """Projects cross-attention K/V once and allocates self-attention K/V for max_length."""
        cfg = self.config
        batch = enc.shape[0]
        heads = cfg.decoder_attention_heads
        shape = (batch, max_length, heads, cfg.d_model // heads)
        dtype = dtypes(cfg)[0]
        cross = [layer.cross_key_value(enc) for layer in self.layers]
        return {
            "self_k": tuple(jnp.zeros(shape, dtype) for _ in self.layers),
            "self_v": tuple(jnp.zeros(shape, dtype) for _ in self.layers),
            "cross_k": tuple(k for k, _ in cross),
            "cross_v": tuple(v for _, v in cross),
            "enc_mask": jnp.ones(enc.shape[:2], bool) if enc_mask is None else enc_mask,
        }

    def step(self, token, index, cache):
        """token [batch] at position `index` (0-based) -> hidden [batch, d_model], new cache."""
        max_length = cache["self_k"][0].shape[1]
        x = self._embed(token[:, None], offset=index, max_position=max_length)  # [b, 1, d]
        cross_mask = cache["enc_mask"][:, None, None, :]
        self_k, self_v = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer.step(
                x,
                index,
                cache["self_k"][i],
                cache["self_v"][i],
                cache["cross_k"][i],
                cache["cross_v"][i],
                cross_mask,
            )
            self_k.append(k)
            self_v.append(v)
        cache = dict(cache, self_k=tuple(self_k), self_v=tuple(self_v))
        return self.layer_norm(x)[:, 0], cache
