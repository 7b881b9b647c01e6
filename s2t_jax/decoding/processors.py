"""transformers' logits processors for our searches, and the traced settings they read.

The processors are masks applied to a step's scores: the n-gram ban, min length and forced
BOS, in transformers' order. Min length and forced BOS read `SearchOptions`, traced values,
so changing them reuses a compiled search.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from s2t_jax.decoding.beam_search import early_stopping_code, length_penalty_table
from s2t_jax.decoding.settings import GenerationSettings


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


def search_options(settings: GenerationSettings) -> SearchOptions:
    s = settings
    bos = -1 if s.forced_bos_token_id is None else s.forced_bos_token_id
    return SearchOptions(
        min_length=np.int32(s.min_length if s.eos_token_id is not None else 0),
        forced_bos_token_id=np.int32(bos),
        length_penalty=np.float32(s.length_penalty),
        penalty_table=np.asarray(length_penalty_table(s.max_length, s.length_penalty)),
        early_stopping=np.int32(early_stopping_code(s.early_stopping)),
    )


def make_logits_processor(ngram_size: int, eos_token_id: int | None, options: SearchOptions):
    """transformers' processors for these settings, in its order: NoRepeatNGram, MinLength,
    ForcedBOS. All are masks, so order only matters when the forced BOS token is also the eos
    that MinLength bans: ForcedBOS wins, as in transformers. Min length and forced BOS are
    traced values, so they always run (as no-ops when unset)."""

    def process(scores, sequences, cur_len):
        ids = jnp.arange(scores.shape[-1])  # [vocab]
        if ngram_size > 0:
            scores = ban_repeated_ngrams(scores, sequences, cur_len, ngram_size)
        if eos_token_id is not None:
            ban = (cur_len < options.min_length) & (ids == eos_token_id)
            scores = jnp.where(ban, -jnp.inf, scores)
        bos = options.forced_bos_token_id
        if bos.ndim:  # one forced token per row
            bos = bos[:, None]  # [rows, 1]
        forced = jnp.where(ids == bos, 0.0, -jnp.inf).astype(scores.dtype)  # [(rows,) vocab]
        return jnp.where((cur_len == 1) & (bos >= 0), forced, scores)

    return process
