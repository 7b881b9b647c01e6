"""Beam search as one `lax.while_loop`, reproducing transformers 5.x `_beam_search` exactly.

Layout follows flax's decode.py: a `BeamState` of fixed-shape arrays, the top 2*beam candidates
each step, the cache gathered by beam index, and an early exit once no live beam can still
change the result. The scoring rules are transformers' (its semantics are not fairseq's):

* scores are log_softmax(logits), then the logits processors, then + the beam's running score;
  only beam 0 starts live (the others at -1e9) so the first step does not pick duplicates;
* of the 2*beam best candidates, those ending in eos, or all of them on the step that reaches
  max_length, are "finished"; only finished candidates ranked among the first `beam` may enter
  the finished set, scored running_score / generated_length ** length_penalty, where the
  generated length counts the eos but not the decoder start token;
* the next live beams are the best `beam` unfinished candidates;
* a batch item stops taking finished hypotheses once its `beam` slots are full and
  early_stopping is True, or once the best live beam, scored at the current length (at
  max_length for early_stopping="never" with length_penalty > 0), cannot beat its worst
  finished hypothesis; the loop ends when no item can change, or at max_length.

The -1e9 penalties and their order of addition are kept as transformers has them, so float32
rounding (and therefore tie order) agrees too.

Beam sampling (transformers' do_sample with num_beams > 1) draws the 2*beam candidates without
replacement from softmax(accumulated scores) instead of taking the top ones: the top 2*beam of
scores + Gumbel noise is such a draw. On request the loop also records each step's processed
scores and raw logits ([max_length - 1, batch * beams, vocab] buffers) and every hypothesis's
beam indices (transformers' output_scores / output_logits / beam_indices).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from s2t_jax.decoding.greedy import force_eos, run_segments, step_noise

NEG = -1.0e9  # transformers' "very large negative" score


class BeamState(NamedTuple):
    cur_len: jax.Array  # scalar int32: tokens in every live sequence (the start token is 1)
    live_seqs: jax.Array  # [batch, beams, max_length] int32
    live_scores: jax.Array  # [batch, beams] float32: summed log-probs (transformers' running)
    finished_seqs: jax.Array  # [batch, beams, max_length] int32
    finished_scores: jax.Array  # [batch, beams] float32: length-penalised
    finished_flags: jax.Array  # [batch, beams] bool
    finished_lens: jax.Array  # [batch, beams] int32: generated tokens (eos included)
    improvable: jax.Array  # [batch] bool: transformers' is_early_stop_heuristic_unsatisfied
    done: jax.Array  # scalar bool: the loop's exit flag
    cache: object  # decoder cache, leaves [batch * beams, ...]
    # With beam indices recorded: [batch, beams, max_length - 1] int32, the flat row
    # (item * beams + beam) each generated token came from, -1 past the end; else None.
    live_indices: object
    finished_indices: object
    records: dict  # name -> [max_length - 1, batch * beams, vocab] float32 (see greedy)


def length_penalty_table(max_length: int, length_penalty: float) -> np.ndarray:
    """[max_length + 1] float32 of n ** length_penalty.

    transformers computes `int ** float` in Python (double) and divides a float32 tensor by it,
    which casts the divisor to float32 first; a table built the same way matches bit for bit.
    """
    # Length 0 never occurs; 1.0 keeps a negative penalty from dividing by zero there.
    values = [float(n) ** length_penalty if n else 1.0 for n in range(max_length + 1)]
    return np.array(values, np.float64).astype(np.float32)


def early_stopping_code(early_stopping):
    """True / False / "never" -> 1 / 0 / 2; a traced code passes through."""
    if isinstance(early_stopping, (jax.Array, np.ndarray)):
        return early_stopping
    if early_stopping is True or early_stopping == "never":
        return 1 if early_stopping is True else 2
    if early_stopping is False:
        return 0
    raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


def gather_beams(x, beam_index):
    """x [batch, beams_in, ...], beam_index [batch, beams_out] -> [batch, beams_out, ...]."""
    return jnp.take_along_axis(x, beam_index.reshape(beam_index.shape + (1,) * (x.ndim - 2)), 1)


def _flat_index(beam_index, beams):
    """[batch, k] beam index within an item -> [batch * k] row of a [batch * beams, ...] array."""
    batch = beam_index.shape[0]
    return (beam_index + jnp.arange(batch)[:, None] * beams).reshape(-1)


def beam_search(
    step_fn,
    cache,
    batch_size: int,
    *,
    num_beams: int,
    max_length: int,
    decoder_start_token_id: int,
    eos_token_id: int | None,
    pad_token_id: int | None,
    length_penalty=1.0,
    early_stopping=False,
    num_return_sequences: int = 1,
    process_scores=None,
    reorder_cache=None,
    penalty_table=None,
    cache_segments=None,
    grow_cache=None,
    sample_keys=None,
    outputs=(),
    row_valid=None,
    vocab_size: int | None = None,
    rescore=None,
    row_cap=None,
):
    """Beam search (or beam sampling, with `sample_keys`) over a cached decoder.

    step_fn(tokens [batch*beams] int32, index scalar, cache) -> (logits [batch*beams, vocab],
    cache). `cache` leaves are [batch * beams, ...], beams of one item adjacent.
    process_scores(log_probs [batch*beams, vocab], sequences [batch*beams, max_length], cur_len)
    applies the logits processors. reorder_cache(cache, rows [batch*beams]) -> cache gathers the
    rows that depend on the beam's history (default: every leaf).
    length_penalty and early_stopping (True / False / "never", or its `early_stopping_code`)
    may be traced scalars, so one compiled search serves every value; a traced length_penalty
    needs `penalty_table` (see length_penalty_table) built on the host.
    cache_segments / grow_cache: grow the cache as the search goes (greedy.run_segments).
    sample_keys: [batch, 2] uint32 key data per item: sample the candidates.
    outputs: names among "scores", "logits" (needing vocab_size) and "beam_indices" to record.
    row_valid: [batch] bool, False for items that only pad the batch: they never keep the
    loop running. rescore(log_probs [batch*beams, vocab], cache, cur_len) -> (scores, cache):
    other scorers after the processors (decoding/fusion.py). row_cap: i32 [batch], each item's
    length cap (ESPnet's maxlenratio, processors.length_limits): its hypotheses that reach it
    are ended with eos at no cost, after all scorers (greedy.force_eos); None: none.

    Returns (sequences [batch*num_return, max_length] int32 filled past their end,
    scores [batch*num_return] float32 (transformers' sequences_scores),
    lengths [batch*num_return] int32: tokens including the start token), plus, with
    `outputs`, a dict of the recorded buffers, "beam_indices" [batch*num_return,
    max_length - 1] and "steps" (scalar int32: loop iterations run).
    """
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(
            f"num_return_sequences={num_return_sequences} must be in [1, num_beams={num_beams}]"
        )
    beams, keep = num_beams, 2 * num_beams  # one eos id: transformers keeps max(2, 1 + 1) * beams
    # transformers' `pad_token_id or eos_token_id[0]`: a pad id of 0 also falls back to eos.
    fill = pad_token_id if pad_token_id else (eos_token_id if eos_token_id is not None else -1)
    if penalty_table is None:
        penalty_table = length_penalty_table(max_length, length_penalty)
    penalty = jnp.asarray(penalty_table, jnp.float32)  # [max_length + 1]
    stop_code = jnp.asarray(early_stopping_code(early_stopping), jnp.int32)
    early_true, early_never = stop_code == 1, stop_code == 2
    if reorder_cache is None:
        reorder_cache = lambda c, rows: jax.tree.map(lambda x: jnp.take(x, rows, axis=0), c)  # noqa: E731
    top_beam_mask = jnp.arange(keep) < beams  # [keep]: only these may finish

    valid = jnp.ones((batch_size,), bool) if row_valid is None else row_valid
    indices = None
    if "beam_indices" in outputs:
        indices = jnp.full((batch_size, beams, max(max_length - 1, 1)), -1, jnp.int32)
    records = {
        name: jnp.zeros((max(max_length - 1, 0), batch_size * beams, vocab_size), jnp.float32)
        for name in outputs
        if name in ("scores", "logits")
    }
    seqs = jnp.full((batch_size, beams, max_length), fill, jnp.int32)
    seqs = seqs.at[:, :, 0].set(decoder_start_token_id)  # [batch, beams, max_length]
    live_scores = jnp.zeros((batch_size, beams), jnp.float32).at[:, 1:].set(NEG)
    state = BeamState(
        cur_len=jnp.array(1, jnp.int32),
        live_seqs=seqs,
        live_scores=live_scores,
        finished_seqs=seqs,
        finished_scores=jnp.full((batch_size, beams), NEG, jnp.float32),
        finished_flags=jnp.zeros((batch_size, beams), bool),
        finished_lens=jnp.zeros((batch_size, beams), jnp.int32),
        improvable=valid,
        done=jnp.array(max_length <= 1) | ~jnp.any(valid),
        cache=cache,
        live_indices=indices,
        finished_indices=indices,
        records=records,
    )

    def not_done(state):
        return ~state.done

    def step(state):
        t = state.cur_len
        flat_seqs = state.live_seqs.reshape(batch_size * beams, max_length)
        last = lax.dynamic_index_in_dim(flat_seqs, t - 1, axis=1, keepdims=False)  # [b*beams]
        logits, cache = step_fn(last, t - 1, state.cache)  # [batch*beams, vocab]
        vocab = logits.shape[-1]
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        if process_scores is not None:
            log_probs = process_scores(log_probs, flat_seqs, t)
        if rescore is not None:  # CTC prefix scores, an LM (decoding/fusion.py)
            log_probs, cache = rescore(log_probs, cache, t)
        if row_cap is not None:  # ESPnet's maxlen: eos, free, once a row reaches its cap
            log_probs = force_eos(log_probs, t, jnp.repeat(row_cap, beams), eos_token_id)
        records = dict(state.records)
        for name, value in (("scores", log_probs), ("logits", logits)):
            if name in records:
                records[name] = lax.dynamic_update_index_in_dim(records[name], value, t - 1, 0)
        log_probs = log_probs.reshape(batch_size, beams, vocab) + state.live_scores[:, :, None]
        flat = log_probs.reshape(batch_size, beams * vocab)

        # Top 2*beams continuations over all beams of an item (or 2*beams drawn without
        # replacement from softmax(flat), best first).
        if sample_keys is None:
            top_scores, top_index = lax.top_k(flat, keep)
        else:
            _, drawn = lax.top_k(flat + step_noise(sample_keys, t, flat.shape[1:]), keep)
            top_scores, order = lax.top_k(jnp.take_along_axis(flat, drawn, axis=1), keep)
            top_index = jnp.take_along_axis(drawn, order, axis=1)
        top_beam = top_index // vocab  # [batch, keep]: source beam
        top_token = (top_index % vocab).astype(jnp.int32)  # [batch, keep]
        top_seqs = gather_beams(state.live_seqs, top_beam)  # [batch, keep, max_length]
        top_seqs = lax.dynamic_update_index_in_dim(top_seqs, top_token, t, axis=2)
        top_indices = None
        if indices is not None:
            top_indices = gather_beams(state.live_indices, top_beam)  # [batch, keep, len - 1]
            rows = (top_beam + jnp.arange(batch_size)[:, None] * beams).astype(jnp.int32)
            top_indices = lax.dynamic_update_index_in_dim(top_indices, rows, t - 1, axis=2)
        hits = jnp.broadcast_to(t + 1 >= max_length, top_token.shape)  # [batch, keep]
        if eos_token_id is not None:
            hits = hits | (top_token == eos_token_id)

        # Next live beams: the best unfinished candidates.
        live_candidates = top_scores + hits.astype(jnp.float32) * NEG
        next_scores, next_pick = lax.top_k(live_candidates, beams)  # [batch, beams]
        live_seqs = gather_beams(top_seqs, next_pick)
        source = gather_beams(top_beam, next_pick)  # [batch, beams]

        # Finished hypotheses: merge the new ones into the kept set, best first.
        just_finished = hits & top_beam_mask[None, :]  # [batch, keep]
        new_scores = top_scores / penalty[t]
        full = jnp.all(state.finished_flags, axis=1, keepdims=True) & early_true
        new_scores = new_scores + full.astype(jnp.float32) * NEG
        new_scores = new_scores + (~state.improvable[:, None]).astype(jnp.float32) * NEG
        new_scores = new_scores + (~just_finished).astype(jnp.float32) * NEG
        merged_scores = jnp.concatenate([state.finished_scores, new_scores], axis=1)  # [b, 3*beams]
        _, pick = lax.top_k(merged_scores, beams)  # [batch, beams]
        merged_seqs = jnp.concatenate([state.finished_seqs, top_seqs], axis=1)
        merged_flags = jnp.concatenate([state.finished_flags, just_finished], axis=1)
        new_lens = jnp.broadcast_to(t, top_token.shape).astype(jnp.int32)
        merged_lens = jnp.concatenate([state.finished_lens, new_lens], axis=1)
        finished_seqs = gather_beams(merged_seqs, pick)
        finished_scores = gather_beams(merged_scores, pick)
        finished_flags = gather_beams(merged_flags, pick)
        finished_lens = gather_beams(merged_lens, pick)
        live_indices = finished_indices = None
        if indices is not None:
            live_indices = gather_beams(top_indices, next_pick)
            merged = jnp.concatenate([state.finished_indices, top_indices], axis=1)
            finished_indices = gather_beams(merged, pick)

        cache = reorder_cache(cache, _flat_index(source, beams))

        # Can the best live beam still beat the worst finished one?
        t = t + 1
        best_len = jnp.where(early_never & (length_penalty > 0.0), max_length - 1, t - 1)
        best_live = next_scores[:, :1] / penalty[best_len]  # [batch, 1]
        worst = jnp.min(finished_scores, axis=1, keepdims=True)
        worst = jnp.where(finished_flags, worst, NEG)  # [batch, beams]
        improvable = state.improvable & jnp.any(best_live > worst, axis=1)
        padding = ~valid[:, None]  # [batch, 1]: items that only pad the batch
        all_full = jnp.all(finished_flags | padding) & early_true
        done = ~jnp.any(improvable) | all_full | jnp.all(hits | padding)
        return BeamState(
            t,
            live_seqs,
            next_scores,
            finished_seqs,
            finished_scores,
            finished_flags,
            finished_lens,
            improvable,
            done,
            cache,
            live_indices,
            finished_indices,
            records,
        )

    state = run_segments(not_done, step, state, cache_segments, grow_cache)
    n = num_return_sequences
    sequences = state.finished_seqs[:, :n].reshape(batch_size * n, max_length)
    scores = state.finished_scores[:, :n].reshape(-1)
    lengths = 1 + state.finished_lens[:, :n].reshape(-1)
    if not outputs:
        return sequences, scores, lengths
    extras = dict(state.records, steps=state.cur_len - 1)
    if indices is not None:
        extras["beam_indices"] = state.finished_indices[:, :n].reshape(batch_size * n, -1)
    return sequences, scores, lengths, extras
