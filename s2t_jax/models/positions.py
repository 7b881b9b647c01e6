"""Sinusoidal positions with the fairseq / transformers formula.

Row p of the table is `[sin(p * w) | cos(p * w)]` with `w_i = exp(-i * log(10000) / (half - 1))`.
Real tokens and frames take positions `padding_idx + 1, padding_idx + 2, ...`; padding takes row
`padding_idx`, which is all zeros. The table is built in float32 numpy in the same order of
operations as transformers, so the rounding of `p * w` (which matters at large p) agrees.
"""

import functools
import math

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=32)
def sinusoidal_table(num_positions: int, dim: int, padding_idx: int) -> np.ndarray:
    """[num_positions, dim] float32 table; row `padding_idx` is zero."""
    half = dim // 2
    scale = math.log(10000) / (half - 1)
    freqs = np.exp(np.arange(half, dtype=np.float32) * np.float32(-scale))  # [half]
    angles = np.arange(num_positions, dtype=np.float32)[:, None] * freqs[None, :]  # [pos, half]
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # [pos, 2 * half]
    if dim % 2:
        table = np.concatenate([table, np.zeros((num_positions, 1), np.float32)], axis=1)
    table[padding_idx] = 0.0
    table.setflags(write=False)
    return table


def position_ids(valid, padding_idx: int, offset=0):
    """fairseq's make_positions: cumulative count of valid items, pads mapped to padding_idx.

    valid: [batch, len] bool. offset: number of items already seen (decoding with a cache).
    """
    valid = valid.astype(jnp.int32)
    return (jnp.cumsum(valid, axis=1) + offset) * valid + padding_idx  # [batch, len]


def sinusoidal_positions(valid, dim: int, padding_idx: int, offset=0, max_position=None):
    """Position embeddings for a [batch, len] validity mask -> [batch, len, dim] float32."""
    length = valid.shape[1]
    if max_position is None:
        max_position = length + (offset if isinstance(offset, int) else 0)
    table = jnp.asarray(sinusoidal_table(padding_idx + 2 + max_position, dim, padding_idx))
    return jnp.take(table, position_ids(valid, padding_idx, offset), axis=0)
