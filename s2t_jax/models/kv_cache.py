"""The decoder's KV cache: its layout, and how a search grows and reorders it.

One cached step exists (`Decoder.step`), and its cache is laid out for search, not training:
  self_k, self_v: per layer [batch * beams, heads, length, head_dim]: heads before time, so
    attention needs no per-step transpose of the cache (with the model's [batch, length,
    heads, head_dim] XLA transposed every cached K/V on every step). Beam search gathers
    these rows by beam index each step (`reorder_self_cache`). (Keeping K/V in place and
    gathering only an ancestry table, with each query scored against all beams of its item,
    reads less memory but measured ~40% slower here: XLA:CPU runs those [beams x length]
    products poorly.)
  cross_k [batch, heads, head_dim, src_len], cross_v [batch, heads, src_len, head_dim], per
    layer: once per item, not per beam, since all beams of an item attend to the same
    encoder states; reading them once per item instead of once per beam is most of a beam
    step's memory traffic on long inputs. K is stored transposed so that q.K is a plain
    batched matmul, which XLA:CPU runs ~4x faster than the q.K^T form.
  enc_mask: [batch, src_len] bool.
`length` grows by segments (see cache_segments): a step attends to, and beam search gathers,
a cache at most about twice as long as what has been generated, not max_length.
"""

import jax.numpy as jnp


def new_cache(cross, enc_mask, rows: int, length: int, dtype):
    """A cache for `rows` = batch * beams rows of `length` positions.

    cross: per layer (k, v) [batch, src, heads, head_dim], projected once from the encoder.
    """
    batch, _, heads, head_dim = cross[0][0].shape
    shape = (rows, heads, length, head_dim)
    return {
        "self_k": tuple(jnp.zeros(shape, dtype) for _ in cross),
        "self_v": tuple(jnp.zeros(shape, dtype) for _ in cross),
        "cross_k": tuple(k.transpose(0, 2, 3, 1) for k, _ in cross),  # [batch, h, hd, src]
        "cross_v": tuple(v.transpose(0, 2, 1, 3) for _, v in cross),  # [batch, h, src, hd]
        "enc_mask": enc_mask,
    }


def cache_segments(max_length: int, first: int = 32) -> tuple[int, ...]:
    """Self-attention cache lengths, doubling from `first` up to max_length - 1 (the last
    position a step writes is max_length - 2). A step costs what its cache length costs, so
    decoding to length n touches at most ~2n positions, whatever max_length is."""
    need = max(1, max_length - 1)
    sizes = []
    size = first
    while size < need:
        sizes.append(size)
        size *= 2
    return tuple(sizes) + (need,)


def grow_self_cache(cache, length: int):
    """Pads the self-attention K/V with zeros up to `length` positions."""

    def grow(x):
        return jnp.pad(x, ((0, 0), (0, 0), (0, max(0, length - x.shape[2])), (0, 0)))

    return dict(
        cache,
        self_k=tuple(grow(k) for k in cache["self_k"]),
        self_v=tuple(grow(v) for v in cache["self_v"]),
    )


def reorder_self_cache(cache, rows):
    """Gathers the beam-dependent leaves (self-attention K/V) by flat row index; the encoder
    side is per item and does not move."""
    take = lambda x: x.at[rows].get(mode="promise_in_bounds")  # noqa: E731
    return dict(
        cache,
        self_k=tuple(take(k) for k in cache["self_k"]),
        self_v=tuple(take(v) for v in cache["self_v"]),
    )
