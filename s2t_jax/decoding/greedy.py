"""Greedy decoding as one `lax.while_loop`, with transformers' `generate` semantics.

Each step feeds the last token of every sequence to a cached decoder step, applies the logits
processors to the raw logits (transformers does not log-softmax before greedy argmax, which only
matters for ties), takes the argmax, and writes `pad` instead once a sequence has emitted `eos`.
The loop stops as soon as every sequence is done, so a batch of short outputs costs only as many
steps as its longest member; nothing goes back to the host per token.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class GreedyState(NamedTuple):
    cur_len: jax.Array  # scalar int32: tokens in every sequence so far (the start token is 1)
    sequences: jax.Array  # [batch, max_length] int32, `pad` past cur_len
    finished: jax.Array  # [batch] bool: emitted eos
    scores: jax.Array  # [batch] float32: sum of the chosen tokens' log-probabilities
    cache: object  # the decoder cache pytree


def run_segments(not_done, step, state, cache_segments=None, grow_cache=None):
    """`lax.while_loop(not_done, step, state)`, optionally in segments of growing cache length.

    With cache_segments (n_0 < n_1 < ...), the loop runs while cur_len <= n_0 (a step at
    cur_len t writes cache position t - 1), then grow_cache(cache, n_1) pads the cache and the
    loop goes on, and so on: each step pays for a cache about as long as what it has generated.
    A segment entered after the search is done costs one pad and no step.
    """
    if not cache_segments:
        return lax.while_loop(not_done, step, state)
    for length in cache_segments:
        state = state._replace(cache=grow_cache(state.cache, length))
        state = lax.while_loop(lambda s, n=length: not_done(s) & (s.cur_len <= n), step, state)
    return state


def greedy_search(
    step_fn,
    cache,
    batch_size: int,
    *,
    max_length: int,
    decoder_start_token_id: int,
    eos_token_id: int | None,
    pad_token_id: int,
    process_scores=None,
    cache_segments=None,
    grow_cache=None,
):
    """Greedy search.

    step_fn(tokens [batch] int32, index scalar, cache) -> (logits [batch, vocab] f32, cache).
    process_scores(scores [batch, vocab], sequences [batch, max_length], cur_len) -> scores: the
    logits processors (min length, n-gram ban, forced BOS), or None.
    cache_segments / grow_cache: see `run_segments`.

    Returns (sequences [batch, max_length] int32, lengths [batch] int32, scores [batch] f32).
    `lengths` counts the start token and the eos; transformers' output is sequences[:, :max(len)].
    """
    sequences = jnp.full((batch_size, max_length), pad_token_id, jnp.int32)
    sequences = sequences.at[:, 0].set(decoder_start_token_id)  # [batch, max_length]
    state = GreedyState(
        cur_len=jnp.array(1, jnp.int32),
        sequences=sequences,
        finished=jnp.zeros((batch_size,), bool),
        scores=jnp.zeros((batch_size,), jnp.float32),
        cache=cache,
    )

    def not_done(state):
        return (state.cur_len < max_length) & ~jnp.all(state.finished)

    def step(state):
        t = state.cur_len
        last = lax.dynamic_index_in_dim(state.sequences, t - 1, axis=1, keepdims=False)  # [b]
        logits, cache = step_fn(last, t - 1, state.cache)  # [batch, vocab]
        scores = logits if process_scores is None else process_scores(logits, state.sequences, t)
        token = jnp.argmax(scores, axis=-1).astype(jnp.int32)  # [batch]
        chosen = jnp.take_along_axis(scores, token[:, None], axis=1)[:, 0]  # [batch]
        token_score = chosen - jax.nn.logsumexp(scores, axis=-1)  # its log-probability
        scores = state.scores + jnp.where(state.finished, 0.0, token_score)
        token = jnp.where(state.finished, pad_token_id, token)
        sequences = lax.dynamic_update_index_in_dim(state.sequences, token, t, axis=1)
        finished = state.finished
        if eos_token_id is not None:
            finished = finished | (token == eos_token_id)
        return GreedyState(t + 1, sequences, finished, scores, cache)

    state = run_segments(not_done, step, state, cache_segments, grow_cache)
    # A sequence's length: up to and including its eos, else everything generated.
    is_eos = (state.sequences == eos_token_id) if eos_token_id is not None else None
    positions = jnp.arange(max_length)[None, :]  # [1, max_length]
    if is_eos is None:
        lengths = jnp.full((batch_size,), state.cur_len, jnp.int32)
    else:
        generated = is_eos & (positions > 0)  # the start token may equal eos; it does not count
        first_eos = jnp.argmax(generated, axis=1)  # [batch]
        lengths = jnp.where(generated.any(axis=1), first_eos + 1, state.cur_len).astype(jnp.int32)
    return state.sequences, lengths, state.scores
