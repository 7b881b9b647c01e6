"""The convolutional subsampler: stride-2 Conv1d + GLU layers that shorten frames 2x each.

Flax convolutions are channels-last, so features stay [batch, frames, channels] throughout and
no transposes are needed (transformers transposes to [batch, channels, frames] and back).

Each conv pads its input with k//2 zeros at both ends. Given F frames, transformers' second conv
therefore sees zeros right after the first conv's (F - 1) // 2 + 1 outputs; frames padded on past
F (generate()'s length buckets) would instead give it GLU(bias + ...) there, which reaches the
last valid states. So a caller that pads past the frames it was given passes their count as
the `conv_extent` variable (`conv_extent_variables`): every conv input is then zeroed past the
subsampled extent, which makes that padding invisible. Padding inside the extent (a batch the
user padded) is convolved as transformers convolves it.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from s2t_jax.models.layers import dtypes


def subsampled_lengths(lengths, num_layers: int):
    """Frames after `num_layers` stride-2 convs with padding k//2: (L - 1) // 2 + 1 per layer."""
    for _ in range(num_layers):
        lengths = (lengths - 1) // 2 + 1
    return lengths


EXTENT_COLLECTION = "conv_extent"


def conv_extent_variables(frames):
    """The variables entry, for `Speech2Text.apply`, that limits the convs to `frames` input
    frames (an int32 scalar, or [batch]): the conv sees zeros past them, as if the input ended
    there."""
    return {EXTENT_COLLECTION: {"encoder": {"conv": {"frames": frames}}}}


def length_mask(lengths, max_len: int):
    """[batch] lengths -> [batch, max_len] bool, True on valid positions."""
    return jnp.arange(max_len)[None, :] < lengths[:, None]


class Conv1dSubsampler(nn.Module):
    config: object

    def setup(self):
        cfg = self.config
        dtype, param_dtype = dtypes(cfg)
        n = cfg.num_conv_layers
        self.conv_layers = [
            nn.Conv(
                features=cfg.conv_channels if i < n - 1 else cfg.d_model * 2,
                kernel_size=(k,),
                strides=(2,),
                padding=[(k // 2, k // 2)],
                dtype=dtype,
                param_dtype=param_dtype,
                name=f"conv_layers_{i}",
            )
            for i, k in enumerate(cfg.conv_kernel_sizes)
        ]

    def __call__(self, features, lengths=None):
        """features: [batch, frames, feat]; lengths: [batch] valid frames, used only when
        `zero_padded_frames` is on, to zero padding before each conv. A `conv_extent`
        variable (see the module docstring) zeroes every conv input past its extent."""
        x = features
        zero = self.config.zero_padded_frames and lengths is not None
        extent = None
        if self.has_variable(EXTENT_COLLECTION, "frames"):
            extent = jnp.broadcast_to(self.get_variable(EXTENT_COLLECTION, "frames"), x.shape[:1])
        for conv in self.conv_layers:
            if extent is not None:  # zeros past the extent, as the conv's own padding
                x = jnp.where(length_mask(extent, x.shape[1])[..., None], x, 0)
                extent = (extent - 1) // 2 + 1
            if zero:
                x = jnp.where(length_mask(lengths, x.shape[1])[..., None], x, 0)
                lengths = (lengths - 1) // 2 + 1
            x = conv(x)  # [batch, frames / 2, 2 * channels]
            x = jax.nn.glu(x, axis=-1)  # [batch, frames / 2, channels]
        if zero:
            x = jnp.where(length_mask(lengths, x.shape[1])[..., None], x, 0)
        return x  # [batch, subsampled, d_model]
