"""The text decoder: teacher-forced over a whole target, or one step at a time with a KV cache.

The cached step is the one greedy and beam search run; its cache is laid out for them (rows =
batch * beams, cross-attention K/V once per item, heads before time; see kv_cache.py).
"""

import jax.numpy as jnp
from flax import linen as nn

from s2t_jax.models.attention import MultiHeadAttention, masked_softmax
from s2t_jax.models.kv_cache import new_cache
from s2t_jax.models.layers import FeedForward, TokenEmbedding, dtypes, layer_norm


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

    def step(self, x, index, self_k, self_v, cross_k, cross_v, self_mask, cross_mask):
        """One cached step of rows = batch * beams (an item's beams adjacent).

        x [rows, 1, d_model]; self_k, self_v [rows, heads, length, hd]: writes this step's K/V
        at `index`; cross_k [batch, heads, hd, src], cross_v [batch, heads, src, hd];
        self_mask [1, 1, 1, length]; cross_mask [batch, 1, 1, src].
        -> (x [rows, 1, d_model], self_k, self_v).
        """
        rows, d = x.shape[0], x.shape[2]
        batch = cross_k.shape[0]
        h = self.self_attn_layer_norm(x)
        out, self_k, self_v = self.self_attn.cached(h, index, self_k, self_v, self_mask)
        x = x + out

        h = self.encoder_attn_layer_norm(x)
        heads, head_dim = self_k.shape[1], self_k.shape[3]
        q = self.encoder_attn.query(h).reshape(batch, rows // batch, heads, head_dim)
        q = q.transpose(0, 2, 1, 3)  # [batch, heads, beams, hd]: an item's beams together
        scores = jnp.matmul(q, cross_k)  # [batch, heads, beams, src]
        ctx = jnp.matmul(masked_softmax(scores, cross_mask, x.dtype), cross_v)
        x = x + self.encoder_attn.out_proj(ctx.transpose(0, 2, 1, 3).reshape(rows, 1, d))
        x = x + self.ffn(self.final_layer_norm(x), True)
        return x, self_k, self_v


class Decoder(nn.Module):
    config: object

    def setup(self):
        cfg = self.config
        self.embed_tokens = TokenEmbedding(cfg, name="embed_tokens")
        self.layers = [DecoderLayer(cfg, name=f"layers_{i}") for i in range(cfg.decoder_layers)]
        self.layer_norm = layer_norm(cfg, "layer_norm")
        self.dropout = nn.Dropout(cfg.dropout)

    def embed(self, ids, offset=0, max_position=None):
        """ids [batch, len] -> scaled token embeddings plus positions [batch, len, d_model];
        `offset` tokens came before (a cached step), `max_position` bounds the table."""
        return self.embed_tokens(ids, offset, max_position)

    def __call__(self, input_ids, enc, enc_mask, attention_mask=None, deterministic=True):
        """Teacher-forced: input_ids [batch, tgt] -> hidden [batch, tgt, d_model].

        enc_mask [batch, src] bool or None; attention_mask [batch, tgt] masks pad keys, as
        transformers' decoder_attention_mask does.
        """
        x = self.dropout(self.embed(input_ids), deterministic=deterministic)
        tgt = input_ids.shape[1]
        self_mask = jnp.tril(jnp.ones((tgt, tgt), bool))[None, None]  # [1, 1, tgt, tgt]
        if attention_mask is not None:
            self_mask = self_mask & attention_mask.astype(bool)[:, None, None, :]
        cross_mask = None if enc_mask is None else enc_mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, self_mask, enc, cross_mask, deterministic)
        return self.layer_norm(x)

    def init_cache(self, enc, enc_mask, beams: int, length: int):
        """The cache of a search over `beams` rows per item: cross-attention K/V projected once
        per item from enc [batch, src, d_model], self-attention K/V for `length` positions
        (grown by kv_cache.grow_self_cache). enc_mask [batch, src] bool, None for all valid."""
        cross = [layer.cross_key_value(enc) for layer in self.layers]  # [b, src, h, hd]
        if enc_mask is None:
            enc_mask = jnp.ones(enc.shape[:2], bool)
        return new_cache(cross, enc_mask, enc.shape[0] * beams, length, dtypes(self.config)[0])

    def step(self, tokens, index, cache, max_length: int):
        """tokens [batch * beams] at position `index` (0-based) -> (hidden [rows, d_model],
        cache). max_length: the search's length, which sizes the position table."""
        length = cache["self_k"][0].shape[2]
        x = self.embed(tokens[:, None], offset=index, max_position=max_length)  # [rows, 1, d]
        self_mask = (jnp.arange(length) <= index)[None, None, None, :]  # [1, 1, 1, length]
        cross_mask = cache["enc_mask"][:, None, None, :]  # [batch, 1, 1, src]
        self_k, self_v = [], []
        for i, layer in enumerate(self.layers):
            x, k, v = layer.step(
                x,
                index,
                cache["self_k"][i],
                cache["self_v"][i],
                cache["cross_k"][i],
                cache["cross_v"][i],
                self_mask,
                cross_mask,
            )
            self_k.append(k)
            self_v.append(v)
        cache = dict(cache, self_k=tuple(self_k), self_v=tuple(self_v))
        return self.layer_norm(x)[:, 0], cache
