"""The speech encoder: subsampler, scaled input + sinusoidal positions, pre-LN Transformer layers."""

import math

import jax.numpy as jnp
from flax import linen as nn

from s2t_jax.models.attention import MultiHeadAttention
from s2t_jax.models.layers import FeedForward, layer_norm
from s2t_jax.models.positions import sinusoidal_positions
from s2t_jax.models.subsampler import Conv1dSubsampler, length_mask, subsampled_lengths


class EncoderLayer(nn.Module):
    config: object

    def setup(self):
        cfg = self.config
        self.self_attn = MultiHeadAttention(cfg, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = layer_norm(cfg, "self_attn_layer_norm")
        self.ffn = FeedForward(cfg, cfg.encoder_ffn_dim)
        self.final_layer_norm = layer_norm(cfg, "final_layer_norm")
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, x, mask, deterministic: bool):
        h = self.self_attn_layer_norm(x)
        h = self.self_attn(h, h, mask, deterministic)
        x = x + self.dropout(h, deterministic=deterministic)
        h = self.ffn(self.final_layer_norm(x), deterministic)
        return x + self.dropout(h, deterministic=deterministic)  # [batch, frames, d_model]


class Encoder(nn.Module):
    config: object

    def setup(self):
        cfg = self.config
        self.conv = Conv1dSubsampler(cfg)
        self.layers = [EncoderLayer(cfg, name=f"layers_{i}") for i in range(cfg.encoder_layers)]
        self.layer_norm = layer_norm(cfg, "layer_norm")
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, input_features, attention_mask=None, deterministic: bool = True):
        """input_features: [batch, frames, feat]; attention_mask: [batch, frames] (1 = valid).

        Returns (hidden [batch, sub_frames, d_model], mask [batch, sub_frames] bool). As in
        transformers, the valid length is the mask's sum, and no mask means every frame is valid.
        """
        cfg = self.config
        lengths = None if attention_mask is None else attention_mask.sum(-1).astype(jnp.int32)
        x = self.conv(input_features, lengths)  # [batch, sub_frames, d_model]
        if cfg.scale_embedding:
            x = x * math.sqrt(cfg.d_model)
        if lengths is None:
            mask = jnp.ones(x.shape[:2], bool)
        else:
            mask = length_mask(subsampled_lengths(lengths, cfg.num_conv_layers), x.shape[1])
        pos = sinusoidal_positions(mask, cfg.d_model, cfg.pad_token_id)  # [batch, sub, d_model]
        x = self.dropout(x + pos.astype(x.dtype), deterministic=deterministic)
        attn_mask = mask[:, None, None, :]  # [batch, 1, 1, keys]
        for layer in self.layers:
            x = layer(x, attn_mask, deterministic)
        return self.layer_norm(x), mask
