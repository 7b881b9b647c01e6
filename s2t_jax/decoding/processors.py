"""transformers' logits processors for our searches, and the traced settings they read.

The processors are masks and rescalings of a step's scores, applied in transformers' order:
repetition penalty, n-gram ban, bad words, min length, forced BOS, suppressed tokens, tokens
suppressed at the start, then (sampling only) the warpers temperature, top-k and top-p. Which
of them run is static (`StaticSettings`); their values (min length, forced BOS, the penalty,
temperature, top-p) are `SearchOptions`, traced, so changing a value reuses a compiled search.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from s2t_jax.decoding.beam_search import early_stopping_code, length_penalty_table
from s2t_jax.decoding.settings import GenerationSettings, StaticSettings

# No limit on the frames the conv sees (see subsampler.conv_extent_variables).
NO_EXTENT = np.int32(2**30)


def ban_repeated_ngrams(scores, sequences, cur_len, ngram_size: int):
    """transformers' NoRepeatNGramLogitsProcessor on fixed-shape sequences.

    scores [rows, vocab]; sequences [rows, max_length] with `cur_len` valid tokens (the start
    token included, as transformers includes it). A token is banned if it would complete an
    n-gram whose first n-1 tokens equal the last n-1 tokens and that already occurred.
    """
    rows, max_length = sequences.shape
    vocab = scores.shape[-1]
    n = ngram_size
    width = max_length - n + 1
    if width <= 0:
        return scores
    windows = jnp.stack([sequences[:, k : k + width] for k in range(n)], axis=-1)  # [r, w, n]
    start = jnp.maximum(cur_len - (n - 1), 0)
    prefix = lax.dynamic_slice_in_dim(sequences, start, n - 1, axis=1)  # [rows, n - 1]
    complete = jnp.arange(width) <= cur_len - n  # [width]: windows inside the valid tokens
    match = jnp.all(windows[..., :-1] == prefix[:, None, :], axis=-1) & complete  # [rows, w]
    banned_token = jnp.where(match, windows[..., -1], vocab)  # [rows, width]; vocab = no ban
    banned = jnp.zeros((rows, vocab + 1), bool)
    banned = banned.at[jnp.arange(rows)[:, None], banned_token].set(True)[:, :vocab]
    return jnp.where(banned, -jnp.inf, scores)


def penalize_repeats(scores, sequences, cur_len, penalty):
    """transformers' RepetitionPenaltyLogitsProcessor: every token among the first `cur_len`
    of a row (start token included) has its score multiplied by `penalty` if negative, else
    divided by it. scores [rows, vocab]; sequences [rows, max_length]."""
    rows, max_length = sequences.shape
    vocab = scores.shape[-1]
    tokens = jnp.where(jnp.arange(max_length) < cur_len, sequences, vocab)  # vocab: not seen
    seen = jnp.zeros((rows, vocab + 1), bool)
    seen = seen.at[jnp.arange(rows)[:, None], tokens].set(True)[:, :vocab]  # [rows, vocab]
    penalized = jnp.where(scores < 0, scores * penalty, scores / penalty)
    return jnp.where(seen, penalized, scores)


def ban_bad_words(scores, sequences, cur_len, words):
    """transformers' NoBadWordsLogitsProcessor: a one-token word is always banned; a longer
    word's last token is banned where the row's last tokens equal the rest of the word."""
    ids = jnp.arange(scores.shape[-1])  # [vocab]
    single = [w[0] for w in words if len(w) == 1]
    if single:
        scores = jnp.where(jnp.isin(ids, jnp.asarray(single)), -jnp.inf, scores)
    for word in (w for w in words if len(w) > 1):
        n = len(word) - 1
        start = jnp.maximum(cur_len - n, 0)
        tail = lax.dynamic_slice_in_dim(sequences, start, n, axis=1)  # [rows, n]
        match = jnp.all(tail == jnp.asarray(word[:-1]), axis=1) & (cur_len >= n)  # [rows]
        scores = jnp.where(match[:, None] & (ids == word[-1]), -jnp.inf, scores)
    return scores


def top_k_filter(scores, k: int):
    """transformers' TopKLogitsWarper: scores below the k-th best become -inf."""
    k = min(k, scores.shape[-1])
    kth = lax.top_k(scores, k)[0][:, -1:]  # [rows, 1]
    return jnp.where(scores < kth, -jnp.inf, scores)


def top_p_filter(scores, top_p, min_keep: int):
    """transformers' TopPLogitsWarper: in ascending order, tokens whose cumulative probability
    is <= 1 - top_p become -inf, the best `min_keep` always kept."""
    rows, vocab = scores.shape
    order = jnp.argsort(scores, axis=-1)  # ascending
    ascending = jnp.take_along_axis(scores, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(ascending, axis=-1), axis=-1)
    remove = (cumulative <= 1 - top_p) & (jnp.arange(vocab) < vocab - min_keep)
    removed = jnp.zeros((rows, vocab), bool).at[jnp.arange(rows)[:, None], order].set(remove)
    return jnp.where(removed, -jnp.inf, scores)


class SearchOptions(NamedTuple):
    """The settings that are traced values, not compile-time constants: changing them reuses the
    compiled search. Built by `search_options`."""

    min_length: jax.Array  # int32 scalar
    # int32 scalar, -1 for none; or [rows] int32, one forced token per row (search() repeats a
    # per-item [batch] array over the beams): validation of multilingual ST forces each
    # utterance's own target-language tag.
    forced_bos_token_id: jax.Array
    length_penalty: jax.Array  # float32 scalar
    penalty_table: jax.Array  # [max_length + 1] float32: n ** length_penalty, as transformers
    early_stopping: jax.Array  # int32 scalar: 0 False, 1 True, 2 "never"
    repetition_penalty: jax.Array  # float32 scalar
    temperature: jax.Array  # float32 scalar
    top_p: jax.Array  # float32 scalar
    # int32 scalar: the input frames the caller gave; the conv sees zeros past them, so frames
    # generate() pads on are invisible (subsampler.conv_extent_variables). NO_EXTENT: no limit.
    conv_frames: jax.Array
    # Sampling: [batch, 2] uint32, one PRNG key's data per row (per item in beam search), so a
    # row's draws do not depend on its batch mates, devices or length groups; else a uint32
    # scalar placeholder.
    rng: jax.Array
    # float32 scalars, ESPnet's length ratios (see `length_limits`); NaN: not set.
    maxlenratio: jax.Array = np.float32(np.nan)
    minlenratio: jax.Array = np.float32(np.nan)


# The fields that may hold one value per row ([batch, ...]): split over devices with the rows.
PER_ROW_FIELDS = ("forced_bos_token_id", "rng")


def search_options(settings: GenerationSettings, conv_frames=None, rng=None) -> SearchOptions:
    s = settings
    bos = -1 if s.forced_bos_token_id is None else s.forced_bos_token_id
    return SearchOptions(
        min_length=np.int32(s.min_length if s.eos_token_id is not None else 0),
        forced_bos_token_id=np.int32(bos),
        length_penalty=np.float32(s.length_penalty),
        penalty_table=np.asarray(length_penalty_table(s.max_length, s.length_penalty)),
        early_stopping=np.int32(early_stopping_code(s.early_stopping)),
        repetition_penalty=np.float32(s.repetition_penalty),
        temperature=np.float32(s.temperature),
        top_p=np.float32(s.top_p),
        conv_frames=NO_EXTENT if conv_frames is None else np.int32(conv_frames),
        rng=np.uint32(0) if rng is None else rng,
        maxlenratio=np.float32(np.nan if s.maxlenratio is None else s.maxlenratio),
        minlenratio=np.float32(np.nan if s.minlenratio is None else s.minlenratio),
    )


# No cap: a row length the search never reaches.
NO_CAP = 2**30
# int(ratio * length) as ESPnet computes it (float64 on the host), from float32 on the device:
# the product is nudged up by this relative amount before the floor, so that 0.7 * 10 gives 7
# as Python's int(0.7 * 10) does (float32 gives 6.9999998). Only a product that truly lies
# within 2**-20 (relative) below an integer floors differently, which ratios of a few decimals
# never give at encoder lengths below 2**20.
_RATIO_NUDGE = 1.0 + 2.0**-20


def length_limits(options: SearchOptions, enc_lengths, min_length, max_length: int):
    """Per-row length limits from ESPnet's maxlenratio / minlenratio (espnet/nets/beam_search.py),
    in the search's own units (tokens counting the decoder start token, as min_length and
    max_length count them).

    enc_lengths i32 [batch]: each row's valid encoder frames (after the subsampler), which is
    what ESPnet's ratios multiply. ESPnet allows at most maxlen labels, maxlen =
    enc_length if maxlenratio == 0 else max(1, int(maxlenratio * enc_length)), and appends eos
    to every hypothesis still running after them; it keeps an ended hypothesis only if it has
    at least minlen = int(minlenratio * enc_length) labels. Here:

      cap i32 [batch]: min(max_length, maxlen + 2) (start, maxlen labels, eos): a hypothesis
          that reaches cap - 1 tokens is ended with eos at no cost (greedy.force_eos). NO_CAP when
          maxlenratio is not set, so the search ends at max_length as transformers' does.
      min_rows i32 [batch]: max(min_length, minlen + 1): eos is banned while a hypothesis has
          fewer tokens than this (transformers' min_length rule), i.e. until it holds minlen
          labels. ESPnet drops an eos-ended hypothesis that is too short; banning eos keeps
          the beam full instead, as transformers' min_length does.

    Both ratios are traced values: a new ratio reuses the compiled search.
    """
    length = enc_lengths.astype(jnp.float32)  # [batch]
    # Clipped before the int cast, so a huge ratio cannot wrap around.
    scaled = jnp.floor(jnp.minimum(options.maxlenratio * length * _RATIO_NUDGE, NO_CAP))
    scaled = scaled.astype(jnp.int32)
    maxlen = jnp.where(options.maxlenratio == 0, enc_lengths, jnp.maximum(1, scaled))
    cap = jnp.where(
        jnp.isnan(options.maxlenratio), NO_CAP, jnp.minimum(max_length, maxlen + 2)
    ).astype(jnp.int32)
    minlen = jnp.floor(jnp.minimum(options.minlenratio * length * _RATIO_NUDGE, NO_CAP))
    minlen = minlen.astype(jnp.int32)
    min_rows = jnp.where(
        jnp.isnan(options.minlenratio), min_length, jnp.maximum(min_length, minlen + 1)
    )
    min_rows = jnp.broadcast_to(min_rows, enc_lengths.shape).astype(jnp.int32)
    return cap, min_rows


def per_row(options: SearchOptions) -> tuple[bool, ...]:
    """Which PER_ROW_FIELDS hold a value per row: a static property of the options' shapes."""
    return tuple(np.ndim(getattr(options, name)) > 0 for name in PER_ROW_FIELDS)


def options_for_rows(options: SearchOptions, rows, size: int) -> SearchOptions:
    """The options of a subset of the rows (a length group), padded to `size` rows."""
    changes = {}
    for name in PER_ROW_FIELDS:
        value = getattr(options, name)
        if np.ndim(value) > 0:
            picked = np.asarray(value)[rows]
            widths = [(0, size - len(rows))] + [(0, 0)] * (picked.ndim - 1)
            changes[name] = np.pad(picked, widths)
    return options._replace(**changes)


def make_logits_processor(static: StaticSettings, options: SearchOptions):
    """transformers' processors for these settings, in its order (see the module docstring).

    Returns process(scores [rows, vocab], sequences [rows, max_length], cur_len) -> scores.
    options.forced_bos_token_id is a scalar or [rows]. Min length and forced BOS are traced
    values, so they always run (as no-ops when unset). Masks commute, so order matters only
    where a forced token is also banned (ForcedBOS wins over MinLength, later suppression wins
    over ForcedBOS) and for the rescalings.
    """
    s = static
    min_keep = 2 if s.num_beams > 1 else 1  # transformers keeps a non-eos token for beams

    def process(scores, sequences, cur_len):
        ids = jnp.arange(scores.shape[-1])  # [vocab]
        if s.repetition_penalty:
            scores = penalize_repeats(scores, sequences, cur_len, options.repetition_penalty)
        if s.no_repeat_ngram_size > 0:
            scores = ban_repeated_ngrams(scores, sequences, cur_len, s.no_repeat_ngram_size)
        if s.bad_words_ids:
            scores = ban_bad_words(scores, sequences, cur_len, s.bad_words_ids)
        if s.eos_token_id is not None:
            min_length = options.min_length  # a scalar, or [rows] (length_limits)
            if min_length.ndim:
                min_length = min_length[:, None]  # [rows, 1]
            ban = (cur_len < min_length) & (ids == s.eos_token_id)
            scores = jnp.where(ban, -jnp.inf, scores)
        bos = options.forced_bos_token_id
        if bos.ndim:  # one forced token per row
            bos = bos[:, None]  # [rows, 1]
        forced = jnp.where(ids == bos, 0.0, -jnp.inf).astype(scores.dtype)  # [(rows,) vocab]
        scores = jnp.where((cur_len == 1) & (bos >= 0), forced, scores)
        if s.suppress_tokens:
            scores = jnp.where(jnp.isin(ids, jnp.asarray(s.suppress_tokens)), -jnp.inf, scores)
        if s.begin_suppress_tokens:
            # transformers suppresses at the first generated token, or the second when a
            # forced BOS takes the first.
            begin = jnp.where(bos >= 0, 2, 1)
            banned = jnp.isin(ids, jnp.asarray(s.begin_suppress_tokens)) & (cur_len == begin)
            scores = jnp.where(banned, -jnp.inf, scores)
        if s.do_sample:
            scores = scores / options.temperature
            if s.top_k > 0:
                scores = top_k_filter(scores, max(s.top_k, min_keep))
            if s.top_p:
                scores = top_p_filter(scores, options.top_p, min_keep)
        return scores

    return process


def row_keys(key, rows: int) -> jax.Array:
    """[rows, 2] uint32: one PRNG key's data per row, fold_in(key, row). key: a JAX PRNG key
    (typed, or raw uint32 [2]) or an int seed."""
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(rows))
    if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        keys = jax.random.key_data(keys)
    return keys.astype(jnp.uint32)
