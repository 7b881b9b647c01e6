"""Analytic FLOPs of a Speech2Text train step, and the peaks MFU is measured against.

Why analytic: MFU should compare runs and frameworks on the work the model needs, not on what a
compiler happened to emit (XLA's cost analysis counts padding, rematerialisation and fused
elementwise work differently per backend). We count matmul and convolution FLOPs (2 per
multiply-add) of the padded batch, and a train step as 3x the forward (forward + two backward
matmuls per forward one).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def forward_flops(cfg, batch: int, frames: int, target_len: int, ctc: bool = False) -> float:
    """Matmul FLOPs of one forward pass over a padded batch [batch, frames] -> [batch, target]."""
    d, v = cfg.d_model, cfg.vocab_size
    total = 0.0
    t, c_in = frames, cfg.input_feat_per_channel * cfg.input_channels
    for i, k in enumerate(cfg.conv_kernel_sizes):
        t = (t - 1) // 2 + 1
        c_out = cfg.conv_channels if i < cfg.num_conv_layers - 1 else 2 * d
        total += 2 * batch * t * k * c_in * c_out
        c_in = c_out // 2  # GLU halves the channels
    s, n = t, target_len
    enc = 4 * 2 * s * d * d + 2 * 2 * s * s * d + 2 * 2 * s * d * cfg.encoder_ffn_dim
    if getattr(cfg, "encoder_type", "transformer") == "conformer":
        enc = _conformer_layer_flops(cfg, s)
        total += 2 * batch * s * d * d  # the projection after the subsampler
    dec = (
        4 * 2 * n * d * d  # self-attention projections
        + 2 * 2 * n * n * d  # self-attention scores and context
        + 2 * 2 * n * d * d  # cross-attention q and out projections
        + 2 * 2 * s * d * d  # cross-attention k and v projections
        + 2 * 2 * n * s * d  # cross-attention scores and context
        + 2 * 2 * n * d * cfg.decoder_ffn_dim
    )
    total += batch * (cfg.encoder_layers * enc + cfg.decoder_layers * dec)
    total += 2 * batch * n * d * v  # output projection
    if ctc:
        total += 2 * batch * s * d * v
    return float(total)


def _conformer_layer_flops(cfg, s: int) -> float:
    """One Conformer block over s frames: two FFNs, attention (rel_pos adds the position
    projection of its 2s - 1 relative positions and a second score matrix), the convolution
    module (pointwise d -> 2d, depthwise k taps, pointwise d -> d)."""
    d, f, k = cfg.d_model, cfg.encoder_ffn_dim, cfg.depthwise_conv_kernel_size
    flops = 2 * (2 * 2 * s * d * f)  # ffn1 + ffn2
    flops += 4 * 2 * s * d * d + 2 * 2 * s * s * d  # projections, scores and context
    if cfg.pos_enc_type == "rel_pos":
        flops += 2 * (2 * s - 1) * d * d + 2 * s * s * d
    flops += 2 * s * d * 2 * d + 2 * s * d * k + 2 * s * d * d
    return flops


def train_flops(cfg, batch: int, frames: int, target_len: int, ctc: bool = False) -> float:
    return 3.0 * forward_flops(cfg, batch, frames, target_len, ctc)


# Dense peak FLOP/s per device, by substring of jax's device_kind: (bfloat16, float32).
# float32 on NVIDIA counts TF32 tensor cores, which XLA uses for f32 matmuls by default.
PEAK_FLOPS = {
    "H200": (989e12, 494e12),
    "H100": (989e12, 494e12),
    "A100": (312e12, 156e12),
    "L4": (121e12, 60e12),
    "TPU v6": (918e12, 918e12 / 2),
    "TPU v5p": (459e12, 459e12 / 2),
    "TPU v5 lite": (197e12, 197e12 / 2),
    "TPU v5e": (197e12, 197e12 / 2),
    "TPU v4": (275e12, 275e12 / 2),
}


def table_peak(device, dtype: str) -> float | None:
    """The table's peak for a jax device and compute dtype name, or None when unknown."""
    kind = getattr(device, "device_kind", "")
    for name, (bf16, f32) in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return f32 if dtype == "float32" else bf16
    return None


def measure_matmul_peak(n: int = 1024, dtype=jnp.float32, seconds: float = 1.0) -> float:
    """FLOP/s of a jitted square matmul chain on the default device (what "peak" means on CPU)."""
    a = jnp.ones((n, n), dtype) / n
    chain = jax.jit(lambda x: x @ a @ a @ a @ a)
    chain(a).block_until_ready()
    runs, start = 0, time.perf_counter()
    while True:
        chain(a).block_until_ready()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and runs >= 3:
            return 4 * 2 * n**3 * runs / elapsed


def peak_flops(device, dtype: str, configured: float = 0.0, measure_cpu: bool = True):
    """Per-device peak: the configured value, else the table, else (CPU) a measurement."""
    if configured > 0:
        return float(configured)
    peak = table_peak(device, dtype)
    if peak is None and device.platform == "cpu" and measure_cpu:
        peak = measure_matmul_peak(dtype=jnp.float32 if dtype == "float32" else jnp.bfloat16)
    return peak
