"""Multi-head attention with the projections split out, so the decoder can cache K/V.

Keys and values are [batch, len, heads, head_dim] here; the cached decoder step (decoder.py)
lays them out for search instead (see kv_cache.py) and uses the projections directly.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from s2t_jax.models.layers import dense


def masked_softmax(scores, mask, dtype):
    """Softmax over the last axis in float32, where `mask` is False set to float32's minimum
    (as dot_product_attention masks), cast to `dtype`. The cached decoder step uses it."""
    scores = jnp.where(mask, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1).astype(dtype)


def dot_product_attention(q, k, v, mask, dropout=None, deterministic=True):
    """Softmax attention in float32.

    q: [batch, q_len, heads, head_dim], already scaled; k, v: [batch, k_len, heads, head_dim];
    mask: bool, broadcastable to [batch, heads, q_len, k_len], True where attending is allowed.
    """
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)  # [batch, heads, q, k]
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(scores, axis=-1)
    if dropout is not None:
        weights = dropout(weights, deterministic=deterministic)
    weights = weights.astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)  # [batch, q, heads, head_dim]


class MultiHeadAttention(nn.Module):
    """transformers' Speech2TextAttention: q/k/v/out projections with bias, q scaled by 1/sqrt(d)."""

    config: object
    num_heads: int

    def setup(self):
        d = self.config.d_model
        self.head_dim = d // self.num_heads
        self.q_proj = dense(self.config, d, "q_proj")
        self.k_proj = dense(self.config, d, "k_proj")
        self.v_proj = dense(self.config, d, "v_proj")
        self.out_proj = dense(self.config, d, "out_proj")
        self.attn_dropout = nn.Dropout(self.config.attention_dropout)

    def _split(self, x):
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)  # [b, l, heads, hd]

    def query(self, x):
        return self._split(self.q_proj(x) * (self.head_dim**-0.5))

    def key_value(self, x):
        return self._split(self.k_proj(x)), self._split(self.v_proj(x))

    def attend(self, q, k, v, mask, deterministic):
        ctx = dot_product_attention(q, k, v, mask, self.attn_dropout, deterministic)
        return self.out_proj(ctx.reshape(*ctx.shape[:2], -1))  # [batch, q_len, d_model]

    def cached(self, h, index, self_k, self_v, self_mask):
        """Self-attention of one new position over a KV cache (kv_cache.py's layout).

        h [rows, 1, d_model]; self_k, self_v [rows, heads, length, hd]: this step's K/V are
        written at `index`; self_mask [1, 1, 1, length]. The decoder's and the LM's cached
        steps both attend through here. -> (out [rows, 1, d_model], self_k, self_v).
        """
        rows, d = h.shape[0], h.shape[2]
        q = self.query(h).transpose(0, 2, 1, 3)  # [rows, heads, 1, hd]
        k, v = self.key_value(h)  # [rows, 1, heads, hd]
        at = (0, 0, index, 0)
        self_k = lax.dynamic_update_slice(self_k, k.transpose(0, 2, 1, 3), at)
        self_v = lax.dynamic_update_slice(self_v, v.transpose(0, 2, 1, 3), at)
        scores = lax.dot_general(q, self_k, (((3,), (3,)), ((0, 1), (0, 1))))  # [r, h, 1, len]
        ctx = jnp.matmul(masked_softmax(scores, self_mask, self_v.dtype), self_v)  # [r,h,1,hd]
        return self.out_proj(ctx.transpose(0, 2, 1, 3).reshape(rows, 1, d)), self_k, self_v

    def __call__(self, x, kv_input, mask, deterministic: bool):
        k, v = self.key_value(kv_input)
        return self.attend(self.query(x), k, v, mask, deterministic)
