"""SpecAugment as fairseq's `SpecAugmentTransform`, batched and jittable, run inside the train step.

Why on device: masks are a few compares and a select over a tensor that is already on the
accelerator, the shapes are static (padded buckets), and drawing from the step's rng keeps
resumed runs bit-identical without carrying numpy generator state in the loader.

Per utterance of n valid frames and F bins, exactly as fairseq draws them:
  * mask value: the mean of the utterance's valid [n, F] features (fairseq: spectrogram.mean());
  * time warp (W > 0 and 2W < n): centre w0 ~ U[W, n - W), shift w ~ U[-W + 1, W); frames
    [0, w0) are linearly resized to w0 + w frames and [w0, n) to n - w0 - w (cv2 INTER_LINEAR,
    half-pixel centres);
  * freq_mask_N times: width f ~ U[0, freq_mask_F), start f0 ~ U[0, F - f);
  * time_mask_N times: width t ~ U[0, T') with T' = min(time_mask_T, floor(n * time_mask_p)),
    start t0 ~ U[0, n - t); no time masks when T' < 1.
U[a, b) is an integer uniform with b excluded (numpy's randint), so masks are at most F - 1 bins
and T' - 1 frames wide. If F < freq_mask_F the utterance is left unchanged, as in fairseq.
Padded frames (>= n) are never touched.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SpecAugmentPolicy:
    freq_mask_n: int = 0
    freq_mask_f: int = 0
    time_mask_n: int = 0
    time_mask_t: int = 0
    time_mask_p: float = 0.0
    time_warp_w: int = 0
    mask_value: float | None = None  # None: the utterance mean

    @classmethod
    def from_fairseq(cls, cfg: dict) -> SpecAugmentPolicy:
        """From the data config's `specaugment:` block (fairseq's key names)."""
        return cls(
            freq_mask_n=int(cfg.get("freq_mask_N", 0)),
            freq_mask_f=int(cfg.get("freq_mask_F", 0)),
            time_mask_n=int(cfg.get("time_mask_N", 0)),
            time_mask_t=int(cfg.get("time_mask_T", 0)),
            time_mask_p=float(cfg.get("time_mask_p", 0.0)),
            time_warp_w=int(cfg.get("time_wrap_W", cfg.get("time_warp_W", 0))),
            mask_value=cfg.get("mask_value"),
        )

    def __post_init__(self):
        if self.freq_mask_n > 0 and self.freq_mask_f <= 0:
            raise ValueError("freq_mask_N > 0 needs freq_mask_F > 0")
        if self.time_mask_n > 0 and (self.time_mask_t <= 0 or not 0 < self.time_mask_p <= 1):
            raise ValueError("time_mask_N > 0 needs time_mask_T > 0 and 0 < time_mask_p <= 1")


# fairseq's S2TDataConfigWriter policies (Park et al. 2019, Table 1, without time warping).
# LibriSpeech recipes use "ld"; MuST-C and CoVoST use "lb".
POLICIES = {
    "lb": SpecAugmentPolicy(
        freq_mask_n=1, freq_mask_f=27, time_mask_n=1, time_mask_t=100, time_mask_p=1.0
    ),
    "ld": SpecAugmentPolicy(
        freq_mask_n=2, freq_mask_f=27, time_mask_n=2, time_mask_t=100, time_mask_p=1.0
    ),
    "sm": SpecAugmentPolicy(
        freq_mask_n=2, freq_mask_f=15, time_mask_n=2, time_mask_t=70, time_mask_p=0.2
    ),
    "ss": SpecAugmentPolicy(
        freq_mask_n=2, freq_mask_f=27, time_mask_n=2, time_mask_t=70, time_mask_p=0.2
    ),
}


def _band_mask(starts, widths, size):
    """starts, widths [batch, n] -> [batch, size] bool, True inside any [start, start + width)."""
    pos = jnp.arange(size)[None, None, :]  # [1, 1, size]
    inside = (pos >= starts[..., None]) & (pos < (starts + widths)[..., None])  # [b, n, size]
    return inside.any(axis=1)


def _time_warp(x, lengths, rng, w_max: int):
    """Piecewise-linear warp of the valid frames of each row; rows with 2W >= n are unchanged."""
    batch, frames, _ = x.shape
    n = lengths.astype(jnp.float32)
    k0, k1 = jax.random.split(rng)
    ok = 2 * w_max < lengths  # [batch]
    w0 = jax.random.randint(k0, (batch,), w_max, jnp.maximum(lengths - w_max, w_max + 1))
    w = jax.random.randint(k1, (batch,), -w_max + 1, w_max)
    w0, w = w0.astype(jnp.float32), w.astype(jnp.float32)
    i = jnp.arange(frames, dtype=jnp.float32)[None, :]  # [1, frames]
    up = w0[:, None] + w[:, None]  # output frames of the upper part
    src_up = jnp.clip((i + 0.5) * w0[:, None] / up - 0.5, 0.0, w0[:, None] - 1)
    j = i - up
    lo_in, lo_out = n[:, None] - w0[:, None], n[:, None] - up
    src_lo = w0[:, None] + jnp.clip(
        (j + 0.5) * lo_in / jnp.maximum(lo_out, 1) - 0.5, 0.0, lo_in - 1
    )
    src = jnp.where(i < up, src_up, src_lo)  # [batch, frames]
    src = jnp.where(ok[:, None] & (i < n[:, None]), src, i)  # identity elsewhere
    lo = jnp.floor(src).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, frames - 1)
    frac = (src - lo)[..., None]  # [batch, frames, 1]
    gather = lambda idx: jnp.take_along_axis(x, idx[..., None], axis=1)  # noqa: E731
    return gather(lo) * (1 - frac) + gather(hi) * frac  # [batch, frames, freq]


def spec_augment(features, lengths, rng, policy: SpecAugmentPolicy):
    """features [batch, frames, freq] float, lengths [batch] valid frames -> same shape."""
    batch, frames, freqs = features.shape
    if freqs < policy.freq_mask_f:
        return features
    x = features.astype(jnp.float32)
    lengths = lengths.astype(jnp.int32)
    valid = (jnp.arange(frames)[None, :] < lengths[:, None])[..., None]  # [batch, frames, 1]
    if policy.mask_value is None:
        total = jnp.sum(jnp.where(valid, x, 0.0), axis=(1, 2))  # [batch]
        value = total / jnp.maximum(lengths * freqs, 1)  # [batch]
    else:
        value = jnp.full((batch,), policy.mask_value, jnp.float32)
    k_warp, k_fw, k_f0, k_tw, k_t0 = jax.random.split(rng, 5)
    if policy.time_warp_w > 0:
        x = jnp.where(valid, _time_warp(x, lengths, k_warp, policy.time_warp_w), x)

    masked = jnp.zeros((batch, frames, freqs), bool)
    if policy.freq_mask_n > 0:
        shape = (batch, policy.freq_mask_n)
        f = jax.random.randint(k_fw, shape, 0, policy.freq_mask_f)  # [batch, n]
        f0 = jax.random.randint(k_f0, shape, 0, freqs - f)
        masked |= _band_mask(f0, f, freqs)[:, None, :] & valid
    if policy.time_mask_n > 0:
        shape = (batch, policy.time_mask_n)
        cap = jnp.floor(lengths * policy.time_mask_p).astype(jnp.int32)
        max_t = jnp.minimum(policy.time_mask_t, cap)[:, None]  # [batch, 1]
        t = jax.random.randint(k_tw, shape, 0, jnp.maximum(max_t, 1))  # 0 when max_t < 1
        t0 = jax.random.randint(k_t0, shape, 0, jnp.maximum(lengths[:, None] - t, 1))
        masked |= _band_mask(t0, t, frames)[:, :, None]
    out = jnp.where(masked, value[:, None, None], x)
    return out.astype(features.dtype)
