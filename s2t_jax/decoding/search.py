"""The jitted search: encoder once, cross K/V once, then greedy or beam search in one loop.

`make_generate_fn(config, settings)` is the pure API: one jitted
`fn(params, features, attention_mask) -> (ids, scores)` that runs the encoder once, projects
cross-attention K/V once, preallocates self-attention K/V, and runs the whole search in a
`lax.while_loop` that exits as soon as the batch is done. The training loop and evaluation call
it with a params pytree. `ids` is [batch * num_return_sequences, max_length], filled after each
sequence's end. generate() uses the same compiled searches through `search_for`.

Compilations: one per (padded input shape, static settings), where the static settings are
num_beams, max_length, no_repeat_ngram_size and the special token ids. min_length,
length_penalty, early_stopping, forced_bos_token_id and num_return_sequences are runtime values
of the same compiled search.
"""

from __future__ import annotations

import collections
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from s2t_jax.decoding.beam_search import beam_search
from s2t_jax.decoding.greedy import greedy_search
from s2t_jax.decoding.placement import ROWS, SAME, split_over
from s2t_jax.decoding.processors import SearchOptions, make_logits_processor, search_options
from s2t_jax.decoding.settings import GenerationSettings, StaticSettings, resolve_settings
from s2t_jax.models.kv_cache import cache_segments, grow_self_cache, reorder_self_cache
from s2t_jax.models.layers import DTYPES
from s2t_jax.models.model import Speech2Text

# Times each search has been traced, by static settings; a second call that only changes the
# input length within a bucket must not add to it (see tests/decoding/test_compile.py).
TRACE_COUNTS: collections.Counter = collections.Counter()
# Encoder traces by padded input shape, for generate()'s length groups (see groups.py).
ENCODER_TRACES: collections.Counter = collections.Counter()


def search(module: Speech2Text, static: StaticSettings, params, features, mask, options):
    """Encoder once, cross K/V once, then greedy or beam search. Traceable.

    Returns, for every beam slot (num_return_sequences is sliced by the caller):
    ids [batch * beams, max_length] int32, scores [batch * beams] float32 and
    lengths [batch * beams] int32 counting the start token.
    """
    enc, enc_mask = module.apply({"params": params}, features, mask, method=Speech2Text.encode)
    return search_encoded(module, static, params, enc, enc_mask, options)


def search_encoded(module: Speech2Text, static: StaticSettings, params, enc, enc_mask, options):
    """`search` from encoder states enc [batch, src, d_model] and enc_mask [batch, src]."""
    s = static
    variables = {"params": params}
    batch = enc.shape[0]
    segments = cache_segments(s.max_length)
    cache = module.apply(
        variables, enc, enc_mask, s.num_beams, segments[0], method=Speech2Text.init_cache
    )

    def step_fn(tokens, index, cache):
        return module.apply(
            variables, tokens, index, cache, s.max_length, method=Speech2Text.decode_step
        )

    if options.forced_bos_token_id.ndim and s.num_beams > 1:  # [batch] -> [batch * beams]
        bos = jnp.repeat(options.forced_bos_token_id, s.num_beams)
        options = options._replace(forced_bos_token_id=bos)
    process = make_logits_processor(s.no_repeat_ngram_size, s.eos_token_id, options)
    common = dict(
        max_length=s.max_length,
        decoder_start_token_id=s.decoder_start_token_id,
        eos_token_id=s.eos_token_id,
        pad_token_id=s.pad_token_id,
        process_scores=process,
        cache_segments=segments,
        grow_cache=grow_self_cache,
    )
    if s.num_beams == 1:
        ids, lengths, scores = greedy_search(step_fn, cache, batch, **common)
        return ids, scores, lengths
    return beam_search(
        step_fn,
        cache,
        batch,
        num_beams=s.num_beams,
        length_penalty=options.length_penalty,
        early_stopping=options.early_stopping,
        num_return_sequences=s.num_beams,
        reorder_cache=reorder_self_cache,
        penalty_table=options.penalty_table,
        **common,
    )


def select_returned(ids, scores, lengths, num_beams: int, num_return: int):
    """Keeps the best `num_return` of each item's `num_beams` rows (already best first)."""
    if num_return == num_beams:
        return ids, scores, lengths

    def keep(x):  # [batch * beams, ...] -> [batch * num_return, ...]
        return x.reshape(-1, num_beams, *x.shape[1:])[:, :num_return].reshape(-1, *x.shape[1:])

    return keep(ids), keep(scores), keep(lengths)


def _search_fn(config, static: StaticSettings, encoded: bool = False, mesh: Mesh | None = None):
    """jit(params, features, mask, options) -> (ids, scores, lengths) for every beam slot.

    encoded=True: jit(params, enc, enc_mask, options), the search from encoder states.
    mesh: a ("data",) mesh to split the rows over (see placement.generation_mesh); the inputs
    must then be placed by `placement.on_mesh` and the batch be a multiple of the mesh size.
    """
    module = Speech2Text(config)
    dtype = DTYPES[config.dtype]

    def run(params, features, mask, options):
        TRACE_COUNTS[static] += 1  # runs at trace time only
        if encoded:
            return search_encoded(module, static, params, features, mask, options)
        features = jnp.asarray(features, dtype)
        if mask is not None:
            mask = jnp.asarray(mask, jnp.int32)
        return search(module, static, params, features, mask, options)

    if mesh is None:
        return jax.jit(run)
    split = {}  # forced BOS per row or not -> the split search

    def call(params, features, mask, options):
        per_row = np.ndim(options.forced_bos_token_id) > 0  # a static shape, also when traced
        if per_row not in split:
            spec = SearchOptions(SAME, ROWS if per_row else SAME, SAME, SAME, SAME)
            split[per_row] = split_over(mesh, run, (SAME, ROWS, ROWS, spec), ROWS)
        return split[per_row](params, features, mask, options)

    return call


def _encoder_fn(config, mesh: Mesh | None = None):
    """jit(params, features, mask) -> (enc [batch, src, d_model], enc_mask [batch, src])."""
    module = Speech2Text(config)
    dtype = DTYPES[config.dtype]

    def run(params, features, mask):
        ENCODER_TRACES[features.shape] += 1  # runs at trace time only
        features = jnp.asarray(features, dtype)
        return module.apply({"params": params}, features, mask, method=Speech2Text.encode)

    return split_over(mesh, run, (SAME, ROWS, ROWS), (ROWS, ROWS))


# (architecture key, static settings, encoded, mesh) -> jitted search
COMPILED_SEARCHES: dict = {}
COMPILED_ENCODERS: dict = {}  # (architecture key, mesh) -> jitted encoder
_NOT_ARCHITECTURE = ("extra", "num_beams", "max_length", "early_stopping")


def _architecture_key(config) -> str:
    """The config fields that shape the network; models that agree on them (two loads of one
    checkpoint, a fine-tuned copy) share compiled searches, since params are an argument."""
    fields = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in _NOT_ARCHITECTURE
    }
    return json.dumps(fields, sort_keys=True, default=str)


def search_for(config, static: StaticSettings, encoded: bool = False, mesh: Mesh | None = None):
    """The compiled search for these settings, shared by every model of this architecture."""
    key = (_architecture_key(config), static, encoded, mesh)
    if key not in COMPILED_SEARCHES:
        COMPILED_SEARCHES[key] = _search_fn(config, static, encoded, mesh)
    return COMPILED_SEARCHES[key]


def encoder_for(config, mesh: Mesh | None = None):
    """The compiled encoder of generate()'s length groups, shared like `search_for`."""
    key = (_architecture_key(config), mesh)
    if key not in COMPILED_ENCODERS:
        COMPILED_ENCODERS[key] = _encoder_fn(config, mesh)
    return COMPILED_ENCODERS[key]


def make_generate_fn(
    config,
    settings: GenerationSettings | None = None,
    *,
    mesh: Mesh | None = None,
    return_lengths: bool = False,
    **overrides,
):
    """One jitted `fn(params, features, attention_mask) -> (ids, scores)` for these settings.

    settings: resolved settings; None resolves them from `config` with `overrides` as
    generate()'s keyword arguments (num_beams=..., max_length=...). With settings given,
    `overrides` replace its fields.
    ids: [batch * num_return_sequences, max_length] int32, the decoder start token first and
    the fill token (pad) after each sequence's end; scores: beam search's length-penalised
    sequence scores, or greedy's summed token log-probabilities. `return_lengths=True` adds
    lengths [batch * num_return_sequences] (start token included): transformers' output is
    ids[:, :lengths.max()]. The function retraces only for a new input shape.

    mesh: a ("data",) mesh whose devices each run the search on their block of rows (see
    `generate`'s devices); the batch must then be a multiple of its size, params replicated
    on it and the rows split over it.
    """
    if settings is None:
        settings = resolve_settings(config, **overrides)
    elif overrides:
        settings = dataclasses.replace(settings, **overrides)
    settings.validate(config.vocab_size)
    run = _search_fn(config, settings.static(), mesh=mesh if mesh and mesh.size > 1 else None)
    options = search_options(settings)
    beams, returned = settings.num_beams, settings.num_return_sequences

    def generate_fn(params, features, attention_mask=None, forced_bos_token_ids=None):
        # forced_bos_token_ids: optional [batch] int32, a forced first token per utterance
        # (-1: none) in place of the single forced_bos_token_id.
        opts = options
        if forced_bos_token_ids is not None:
            opts = opts._replace(forced_bos_token_id=jnp.asarray(forced_bos_token_ids, jnp.int32))
        ids, scores, lengths = run(params, features, attention_mask, opts)
        ids, scores, lengths = select_returned(ids, scores, lengths, beams, returned)
        return (ids, scores, lengths) if return_lengths else (ids, scores)

    return jax.jit(generate_fn)
