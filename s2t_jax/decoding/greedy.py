"""Greedy decoding and sampling as one `lax.while_loop`, with transformers' `generate` semantics.

Each step feeds the last token of every sequence to a cached decoder step, applies the logits
processors to the raw logits (transformers does not log-softmax before greedy argmax, which only
matters for ties), takes the argmax (or, sampling, draws from the softmax of the processed
scores by the Gumbel-max trick, with per-row keys), and writes `pad` instead once a sequence has
emitted `eos`. Per-step processed scores and raw logits can be recorded into preallocated
[max_length - 1, batch, vocab] buffers (transformers' output_scores / output_logits).
The loop stops as soon as every sequence is done, so a batch of short outputs costs only as many
steps as its longest member; nothing goes back to the host per token.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


def step_noise(keys, step, shape):
    """Gumbel noise [rows, *shape] for one step: each row's key folded with the step, so a
    row's draws are the same whatever rows it is batched with (keys [rows, 2] uint32)."""

    def one(key):
        key = jax.random.fold_in(jax.random.wrap_key_data(key), step)
        return jax.random.gumbel(key, shape, jnp.float32)

    return jax.vmap(one)(keys)


def force_eos(scores, cur_len, cap, eos_token_id: int):
    """Ends every hypothesis of a row that has reached its cap: scores [rows, vocab] of the step
    that writes token `cur_len`; cap i32 [rows] (processors.length_limits). Where cur_len + 1 >= cap
    the row's only choice is eos, at score 0 (ESPnet appends it without scoring it). The
    [rows, vocab] select runs only at steps where some row is at its cap (a scalar test
    otherwise), so a search without caps pays nothing for them."""
    hit = cur_len + 1 >= cap  # [rows]

    def force(scores):
        ids = jnp.arange(scores.shape[-1])  # [vocab]
        forced = jnp.where(ids == eos_token_id, 0.0, -jnp.inf).astype(scores.dtype)  # [vocab]
        return jnp.where(hit[:, None], forced[None, :], scores)

    return lax.cond(jnp.any(hit), force, lambda scores: scores, scores)


class GreedyState(NamedTuple):
    cur_len: jax.Array  # scalar int32: tokens in every sequence so far (the start token is 1)
    sequences: jax.Array  # [batch, max_length] int32, `pad` past cur_len
    finished: jax.Array  # [batch] bool: emitted eos
    scores: jax.Array  # [batch] float32: sum of the chosen tokens' log-probabilities
    cache: object  # the decoder cache pytree
    records: dict  # name -> [max_length - 1, batch, vocab] float32, step t - 1 at index t - 1


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
    sample_keys=None,
    outputs=(),
    row_valid=None,
    vocab_size: int | None = None,
    rescore=None,
    row_cap=None,
):
    """Greedy search, or multinomial sampling with `sample_keys`.

    step_fn(tokens [batch] int32, index scalar, cache) -> (logits [batch, vocab] f32, cache).
    process_scores(scores [batch, vocab], sequences [batch, max_length], cur_len) -> scores: the
    logits processors (min length, n-gram ban, forced BOS), or None.
    cache_segments / grow_cache: see `run_segments`.
    sample_keys: [batch, 2] uint32 key data per row: sample instead of argmax.
    outputs: names among "scores" (processed) and "logits" (raw) to record per step (needs
    vocab_size). row_valid: [batch] bool, False for rows that only pad the batch: they start
    finished, so they never keep the loop running. rescore(log_probs [batch, vocab], cache,
    cur_len) -> (scores, cache): other scorers (CTC, an LM: decoding/fusion.py) after the
    processors. row_cap: i32 [batch], each row's length cap (ESPnet's maxlenratio,
    processors.length_limits): a row reaching it is ended with eos (`force_eos`), after all
    scorers; None: none.

    Returns (sequences [batch, max_length] int32, lengths [batch] int32, scores [batch] f32),
    plus, with `outputs`, a dict of the recorded [max_length - 1, batch, vocab] buffers and
    "steps" (scalar int32, how many were written).
    `lengths` counts the start token and the eos; transformers' output is sequences[:, :max(len)].
    """
    sequences = jnp.full((batch_size, max_length), pad_token_id, jnp.int32)
    sequences = sequences.at[:, 0].set(decoder_start_token_id)  # [batch, max_length]
    finished = jnp.zeros((batch_size,), bool) if row_valid is None else ~row_valid
    records = {
        name: jnp.zeros((max(max_length - 1, 0), batch_size, vocab_size), jnp.float32)
        for name in outputs
        if name in ("scores", "logits")
    }
    state = GreedyState(
        cur_len=jnp.array(1, jnp.int32),
        sequences=sequences,
        finished=finished,
        scores=jnp.zeros((batch_size,), jnp.float32),
        cache=cache,
        records=records,
    )

    def not_done(state):
        return (state.cur_len < max_length) & ~jnp.all(state.finished)

    def step(state):
        t = state.cur_len
        last = lax.dynamic_index_in_dim(state.sequences, t - 1, axis=1, keepdims=False)  # [b]
        logits, cache = step_fn(last, t - 1, state.cache)  # [batch, vocab]
        scores = logits if process_scores is None else process_scores(logits, state.sequences, t)
        if rescore is not None:
            scores, cache = rescore(jax.nn.log_softmax(scores, axis=-1), cache, t)
        if row_cap is not None:
            scores = force_eos(scores, t, row_cap, eos_token_id)
        records = dict(state.records)
        for name, value in (("scores", scores), ("logits", logits)):
            if name in records:
                records[name] = lax.dynamic_update_index_in_dim(records[name], value, t - 1, 0)
        if sample_keys is None:
            token = jnp.argmax(scores, axis=-1).astype(jnp.int32)  # [batch]
        else:  # argmax of scores + Gumbel noise: a draw from softmax(scores)
            noise = step_noise(sample_keys, t, scores.shape[1:])  # [batch, vocab]
            token = jnp.argmax(scores + noise, axis=-1).astype(jnp.int32)
        chosen = jnp.take_along_axis(scores, token[:, None], axis=1)[:, 0]  # [batch]
        token_score = chosen - jax.nn.logsumexp(scores, axis=-1)  # its log-probability
        scores = state.scores + jnp.where(state.finished, 0.0, token_score)
        token = jnp.where(state.finished, pad_token_id, token)
        sequences = lax.dynamic_update_index_in_dim(state.sequences, token, t, axis=1)
        finished = state.finished
        if eos_token_id is not None:
            finished = finished | (token == eos_token_id)
        return GreedyState(t + 1, sequences, finished, scores, cache, records)

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
    if not outputs:
        return state.sequences, lengths, state.scores
    return state.sequences, lengths, state.scores, dict(state.records, steps=state.cur_len - 1)
