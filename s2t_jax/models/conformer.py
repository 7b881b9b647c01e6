"""The Conformer encoder of fairseq's `s2t_conformer`: subsampler, positions, Conformer blocks.

A block (Gulati et al., 2020, as fairseq builds it) is: half a feed-forward step, self-attention,
the convolution module, another half feed-forward step and a final layer norm, each with a
residual. Its self-attention takes positions as `config.pos_enc_type` says:

* "abs": sinusoidal positions added once, at the input, as the Transformer encoder adds them;
* "rope": rotary positions applied to each head's slice of the attention *input* (fairseq
  rotates before the q/k projections, not after them; we do the same to load its weights);
* "rel_pos": Transformer-XL relative positions (ESPnet's form): content and position scores
  with the learnt biases `pos_bias_u` / `pos_bias_v`, positions projected by `linear_pos`.

The convolution module's batch norm keeps running statistics in the `batch_stats` collection:
in eval (`deterministic=True`) it normalises with them; in training it normalises with the
statistics of the valid frames of the batch and updates them, so `batch_stats` must be mutable.

Padding. fairseq convolves a padded batch's padding frames like any other, so a row's valid
outputs depend on its batch; we do the same by default, which is what its checkpoints compute.
With `zero_padded_frames` padding is zeroed before the depthwise convolution (as the subsampler
zeroes it before each conv), and then no valid output depends on padding. Frames past a
`conv_extent` (generate()'s length buckets; see subsampler.py) are always zeroed there, since
fairseq would have ended the input at its batch's longest row.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from s2t_jax.models.attention import masked_softmax
from s2t_jax.models.layers import dense, dtypes, layer_norm
from s2t_jax.models.positions import sinusoidal_positions
from s2t_jax.models.subsampler import (
    EXTENT_COLLECTION,
    Conv1dSubsampler,
    length_mask,
    subsampled_lengths,
)

# torch.nn.BatchNorm1d's defaults, which fairseq's convolution module uses.
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.1


@functools.lru_cache(maxsize=32)
def relative_position_table(length: int, dim: int) -> np.ndarray:
    """[2 * length - 1, dim] float32: row r encodes relative position `length - 1 - r` (from
    +(length - 1) down to -(length - 1)), sin on even and cos on odd channels, as ESPnet's
    RelPositionalEncoding lays it out."""
    positions = np.arange(length - 1, -length, -1, dtype=np.float32)[:, None]  # [2L - 1, 1]
    freqs = np.exp(np.arange(0, dim, 2, dtype=np.float32) * np.float32(-math.log(10000.0) / dim))
    table = np.zeros((2 * length - 1, dim), np.float32)
    table[:, 0::2] = np.sin(positions * freqs)
    table[:, 1::2] = np.cos(positions * freqs[: dim // 2])
    table.setflags(write=False)
    return table


def rotary(x):
    """Rotary positions on x [batch, len, heads, head_dim] at positions 0, 1, ...: the channel
    pairs (i, i + head_dim / 2) rotated by angle position * 10000^(-2i / head_dim)."""
    length, head_dim = x.shape[1], x.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    angles = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]  # [len, hd / 2]
    angles = np.concatenate([angles, angles], axis=-1)[None, :, None, :]  # [1, len, 1, hd]
    cos, sin = jnp.asarray(np.cos(angles), x.dtype), jnp.asarray(np.sin(angles), x.dtype)
    first, second = jnp.split(x, 2, axis=-1)
    return x * cos + jnp.concatenate([-second, first], axis=-1) * sin  # [b, len, heads, hd]


def relative_shift(scores):
    """[batch, heads, q, 2q - 1] scores by relative position (column c = position q - 1 - c)
    -> [batch, heads, q, q] by key: out[i, j] = scores[i, q - 1 - i + j], position i - j."""
    q = scores.shape[2]
    index = (q - 1) - jnp.arange(q)[:, None] + jnp.arange(q)[None, :]  # [q, q]
    return jnp.take_along_axis(scores, index[None, None], axis=-1)


class ConformerSelfAttention(nn.Module):
    """Self-attention with the config's position scheme; scores are scaled after the dot
    product (ESPnet's order), which fairseq's MultiheadAttention matches to rounding."""

    config: object

    def setup(self):
        cfg = self.config
        d = cfg.d_model
        self.num_heads = cfg.encoder_attention_heads
        self.head_dim = d // self.num_heads
        self.q_proj = dense(cfg, d, "q_proj")
        self.k_proj = dense(cfg, d, "k_proj")
        self.v_proj = dense(cfg, d, "v_proj")
        self.out_proj = dense(cfg, d, "out_proj")
        self.attn_dropout = nn.Dropout(cfg.attention_dropout)
        if cfg.pos_enc_type == "rel_pos":
            _, param_dtype = dtypes(cfg)
            self.linear_pos = dense(cfg, d, "linear_pos", use_bias=False)
            init = nn.initializers.xavier_uniform()
            shape = (self.num_heads, self.head_dim)
            self.pos_bias_u = self.param("pos_bias_u", init, shape, param_dtype)
            self.pos_bias_v = self.param("pos_bias_v", init, shape, param_dtype)

    def _heads(self, x):
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)  # [b, len, heads, hd]

    def __call__(self, x, key_mask, deterministic: bool):
        """x [batch, frames, d_model]; key_mask [batch, 1, 1, frames] bool (True = valid)."""
        pos_enc_type = self.config.pos_enc_type
        qk_input = x
        if pos_enc_type == "rope":
            qk_input = rotary(self._heads(x)).reshape(x.shape)
        q = self._heads(self.q_proj(qk_input))  # [batch, frames, heads, hd]
        k = self._heads(self.k_proj(qk_input))
        v = self._heads(self.v_proj(x))
        if pos_enc_type == "rel_pos":
            table = jnp.asarray(relative_position_table(x.shape[1], x.shape[2]), x.dtype)
            p = self._heads(self.linear_pos(table))  # [2 * frames - 1, heads, hd]
            content = jnp.einsum("bqhd,bkhd->bhqk", q + self.pos_bias_u.astype(q.dtype), k)
            position = jnp.einsum("bqhd,phd->bhqp", q + self.pos_bias_v.astype(q.dtype), p)
            scores = content + relative_shift(position)  # [batch, heads, frames, frames]
        else:
            scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)  # [batch, heads, frames, frames]
        scores = scores.astype(jnp.float32) / math.sqrt(self.head_dim)
        weights = self.attn_dropout(
            masked_softmax(scores, key_mask, v.dtype), deterministic=deterministic
        )
        ctx = jnp.einsum("bhqk,bkhd->bqhd", weights, v)  # [batch, frames, heads, hd]
        return self.out_proj(ctx.reshape(x.shape))  # [batch, frames, d_model]


class MaskedBatchNorm(nn.Module):
    """torch.nn.BatchNorm1d over channels-last [batch, frames, channels], whose training
    statistics come from the valid frames only (fairseq's include padding; a row's padding
    should not move the model). Running statistics follow torch: momentum 0.1, unbiased
    variance, so a fairseq checkpoint's `running_mean` / `running_var` load as they are."""

    config: object

    @nn.compact
    def __call__(self, x, valid, use_running_average: bool):
        """x [batch, frames, channels]; valid [batch, frames] bool."""
        _, param_dtype = dtypes(self.config)
        channels = x.shape[-1]
        if not self.is_initializing() and not self.has_variable("batch_stats", "mean"):
            raise ValueError(
                "a Conformer encoder needs its batch-norm running statistics: apply it with "
                "{'params': ..., 'batch_stats': ...} (see conformer.fresh_batch_stats)"
            )
        scale = self.param("scale", nn.initializers.ones, (channels,), param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), param_dtype)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            xf = x.astype(jnp.float32)
            w = valid.astype(jnp.float32)[..., None]  # [batch, frames, 1]
            count = jnp.maximum(w.sum(), 1.0)
            mean = (xf * w).sum((0, 1)) / count  # [channels]
            var = (jnp.square(xf - mean) * w).sum((0, 1)) / count
            if not self.is_initializing():
                unbiased = var * count / jnp.maximum(count - 1.0, 1.0)
                m = BATCH_NORM_MOMENTUM
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * unbiased
        y = (x.astype(jnp.float32) - mean) * jax.lax.rsqrt(var + BATCH_NORM_EPSILON)
        return (y * scale + bias).astype(x.dtype)  # [batch, frames, channels]


class DepthwiseConv(nn.Module):
    """torch's Conv1d(d, d, k, groups=d, padding=(k - 1) // 2, bias=False) over channels-last
    [batch, frames, d], as k shifted, per-channel scaled copies of the input summed in a scan.

    Why not nn.Conv(feature_group_count=d): XLA's CPU backend runs a grouped convolution and
    its gradient ~8x slower than this scan (16 vs 134 ms for the demo's [16, 120, 144], k 15,
    forward + backward); unrolling the k taps instead is faster too but multiplies compile time
    by 10. The kernel keeps nn.Conv's [k, 1, d] layout, so checkpoints are the same either way.
    """

    config: object
    kernel_size: int

    @nn.compact
    def __call__(self, x):
        dtype, param_dtype = dtypes(self.config)
        k, frames = self.kernel_size, x.shape[1]
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (k, 1, x.shape[-1]), param_dtype
        )
        taps = jnp.asarray(kernel)[:, 0].astype(jnp.float32)  # [k, d]
        left = (k - 1) // 2
        padded = jnp.pad(x.astype(jnp.float32), ((0, 0), (left, k - 1 - left), (0, 0)))

        def tap(acc, i):  # acc [batch, frames, d] += the input shifted by i, times tap i
            window = jax.lax.dynamic_slice_in_dim(padded, i, frames, axis=1)
            return acc + window * taps[i], None

        out, _ = jax.lax.scan(tap, jnp.zeros(x.shape, jnp.float32), jnp.arange(k))
        return out.astype(dtype)  # [batch, frames, d]


class ConvolutionModule(nn.Module):
    """layer norm -> pointwise conv + GLU -> depthwise conv -> batch norm -> swish -> pointwise
    conv -> dropout; the convolutions have no bias, as in fairseq."""

    config: object

    def setup(self):
        cfg = self.config
        dtype, param_dtype = dtypes(cfg)
        d, k = cfg.d_model, cfg.depthwise_conv_kernel_size
        conv = functools.partial(nn.Conv, use_bias=False, dtype=dtype, param_dtype=param_dtype)
        self.layer_norm = layer_norm(cfg, "layer_norm")
        self.pointwise_conv1 = conv(2 * d, kernel_size=(1,), name="pointwise_conv1")
        self.depthwise_conv = DepthwiseConv(cfg, k, name="depthwise_conv")
        self.batch_norm = MaskedBatchNorm(cfg, name="batch_norm")
        self.pointwise_conv2 = conv(d, kernel_size=(1,), name="pointwise_conv2")
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, x, valid, conv_valid, deterministic: bool):
        """valid: the frames batch statistics count; conv_valid: None, or the frames the
        depthwise conv may see (others zeroed). Both [batch, frames] bool."""
        h = jax.nn.glu(self.pointwise_conv1(self.layer_norm(x)), axis=-1)  # [b, frames, d]
        if conv_valid is not None:
            h = jnp.where(conv_valid[..., None], h, 0)
        h = self.depthwise_conv(h)  # [batch, frames, d_model]
        h = nn.silu(self.batch_norm(h, valid, use_running_average=deterministic))
        return self.dropout(self.pointwise_conv2(h), deterministic=deterministic)


class ConformerFeedForward(nn.Module):
    """layer norm -> w_1 -> swish -> dropout -> w_2 -> dropout (swish whatever the config's
    activation, which is the decoder's: fairseq's Conformer always uses swish)."""

    config: object

    def setup(self):
        cfg = self.config
        self.layer_norm = layer_norm(cfg, "layer_norm")
        self.w_1 = dense(cfg, cfg.encoder_ffn_dim, "w_1")
        self.w_2 = dense(cfg, cfg.d_model, "w_2")
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, x, deterministic: bool):
        h = nn.silu(self.w_1(self.layer_norm(x)))  # [batch, frames, ffn]
        h = self.dropout(h, deterministic=deterministic)
        return self.dropout(self.w_2(h), deterministic=deterministic)  # [b, frames, d_model]


class ConformerLayer(nn.Module):
    config: object

    def setup(self):
        cfg = self.config
        self.ffn1 = ConformerFeedForward(cfg)
        self.self_attn_layer_norm = layer_norm(cfg, "self_attn_layer_norm")
        self.self_attn = ConformerSelfAttention(cfg)
        self.conv_module = ConvolutionModule(cfg)
        self.ffn2 = ConformerFeedForward(cfg)
        self.final_layer_norm = layer_norm(cfg, "final_layer_norm")
        self.dropout = nn.Dropout(cfg.dropout)

    def __call__(self, x, valid, conv_valid, deterministic: bool):
        x = x + 0.5 * self.ffn1(x, deterministic)
        h = self.self_attn(self.self_attn_layer_norm(x), valid[:, None, None, :], deterministic)
        x = x + self.dropout(h, deterministic=deterministic)
        x = x + self.conv_module(x, valid, conv_valid, deterministic)
        x = x + 0.5 * self.ffn2(x, deterministic)
        return self.final_layer_norm(x)  # [batch, frames, d_model]


class ConformerEncoder(nn.Module):
    """The Encoder's interface (models/encoder.py) over Conformer blocks. As in fairseq there is
    a `linear` projection after the positions and no layer norm after the last block (each
    block ends with one)."""

    config: object

    def setup(self):
        cfg = self.config
        self.conv = Conv1dSubsampler(cfg)
        self.linear = dense(cfg, cfg.d_model, "linear")
        self.layers = [ConformerLayer(cfg, name=f"layers_{i}") for i in range(cfg.encoder_layers)]
        self.dropout = nn.Dropout(cfg.dropout)

    def _conv_extent(self, batch: int):
        """Subsampled frames before a `conv_extent` (see subsampler.py), or None."""
        if not self.conv.has_variable(EXTENT_COLLECTION, "frames"):
            return None
        frames = self.conv.get_variable(EXTENT_COLLECTION, "frames")
        return subsampled_lengths(jnp.broadcast_to(frames, (batch,)), self.config.num_conv_layers)

    def __call__(self, input_features, attention_mask=None, deterministic: bool = True):
        """input_features: [batch, frames, feat]; attention_mask: [batch, frames] (1 = valid).

        Returns (hidden [batch, sub_frames, d_model], mask [batch, sub_frames] bool). In
        training (`deterministic=False`) batch norm uses and updates batch statistics.
        """
        cfg = self.config
        lengths = None if attention_mask is None else attention_mask.sum(-1).astype(jnp.int32)
        x = self.conv(input_features, lengths)  # [batch, sub_frames, d_model]
        if cfg.scale_embedding:
            x = x * math.sqrt(cfg.d_model)
        batch, frames = x.shape[:2]
        if lengths is None:
            mask = jnp.ones((batch, frames), bool)
        else:
            mask = length_mask(subsampled_lengths(lengths, cfg.num_conv_layers), frames)
        if cfg.pos_enc_type == "abs":
            pos = sinusoidal_positions(mask, cfg.d_model, cfg.pad_token_id)  # [b, sub, d]
            x = x + pos.astype(x.dtype)
        x = self.dropout(self.linear(x), deterministic=deterministic)
        conv_valid = mask if cfg.zero_padded_frames else None
        extent = self._conv_extent(batch)
        if extent is not None:
            in_extent = length_mask(extent, frames)
            conv_valid = in_extent if conv_valid is None else conv_valid & in_extent
        for layer in self.layers:
            x = layer(x, mask, conv_valid, deterministic)
        return x, mask


def fresh_batch_stats(config):
    """Running statistics of an untrained Conformer (mean 0, variance 1), laid out as the
    `batch_stats` collection: {"encoder": {"layers_i": {"conv_module": {"batch_norm": ...}}}}."""
    stats = {"mean": jnp.zeros((config.d_model,)), "var": jnp.ones((config.d_model,))}
    layers = {
        f"layers_{i}": {"conv_module": {"batch_norm": dict(stats)}}
        for i in range(config.encoder_layers)
    }
    return {"encoder": layers}
