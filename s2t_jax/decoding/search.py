"""The jitted search: encoder once, cross K/V once, then greedy or beam search in one loop.

`make_generate_fn(config, settings)` is the pure API: one jitted
`fn(params, features, attention_mask) -> (ids, scores)` that runs the encoder once, projects
cross-attention K/V once, preallocates self-attention K/V, and runs the whole search in a
`lax.while_loop` that exits as soon as the batch is done. The training loop and evaluation call
it with a params pytree. `ids` is [batch * num_return_sequences, max_length], filled after each
sequence's end. generate() uses the same compiled searches through `search_for`.

Compilations: one per (padded input shape, static settings), where the static settings are
num_beams, max_length, no_repeat_ngram_size, the special token ids, do_sample, top_k, whether
top-p and the repetition penalty apply, the bad / suppressed token lists and what is recorded
per step (`StaticSettings`). min_length, length_penalty, early_stopping, forced_bos_token_id,
num_return_sequences, temperature, top_p, repetition_penalty, ESPnet's maxlenratio /
minlenratio and the PRNG keys are runtime values of the same compiled search.
"""

from __future__ import annotations

import collections
import dataclasses
import json

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from s2t_jax.decoding.beam_search import beam_search
from s2t_jax.decoding.fusion import FusionParams
from s2t_jax.decoding.greedy import greedy_search
from s2t_jax.decoding.placement import ROWS, SAME, split_over
from s2t_jax.decoding.processors import (
    PER_ROW_FIELDS,
    SearchOptions,
    length_limits,
    make_logits_processor,
    per_row,
    row_keys,
    search_options,
)
from s2t_jax.decoding.settings import GenerationSettings, StaticSettings, resolve_settings
from s2t_jax.models.kv_cache import cache_segments, grow_self_cache, reorder_self_cache
from s2t_jax.models.layers import DTYPES
from s2t_jax.models.model import Speech2Text
from s2t_jax.models.params import as_variables
from s2t_jax.models.subsampler import conv_extent_variables

# Times each search has been traced, by static settings; a second call that only changes the
# input length within a bucket must not add to it (see tests/decoding/test_compile.py).
TRACE_COUNTS: collections.Counter = collections.Counter()
# Encoder traces by padded input shape, for generate()'s length groups (see groups.py).
ENCODER_TRACES: collections.Counter = collections.Counter()


def encode(module: Speech2Text, params, features, mask, conv_frames):
    """The encoder, its convs limited to `conv_frames` input frames (see SearchOptions)."""
    variables = {**as_variables(params), **conv_extent_variables(conv_frames)}
    return module.apply(variables, features, mask, method=Speech2Text.encode)


def _model_params(params):
    return params.model if isinstance(params, FusionParams) else params


def search(module: Speech2Text, static: StaticSettings, params, features, mask, options):
    """Encoder once, cross K/V once, then greedy or beam search. Traceable.

    Returns, for every beam slot (num_return_sequences is sliced by the caller):
    ids [batch * beams, max_length] int32, scores [batch * beams] float32,
    lengths [batch * beams] int32 counting the start token, and a dict of what
    `static.outputs` asked to record (empty otherwise; see greedy_search / beam_search).
    """
    enc, enc_mask = encode(module, _model_params(params), features, mask, options.conv_frames)
    return search_encoded(module, static, params, enc, enc_mask, options)


def search_encoded(module: Speech2Text, static: StaticSettings, params, enc, enc_mask, options):
    """`search` from encoder states enc [batch, src, d_model] and enc_mask [batch, src].

    params: the model's, or FusionParams (model, CTC head, LM) for the scorers that
    `static` turns on (ctc_weight, lm_config; decoding/fusion.py)."""
    s = static
    fusion = params if isinstance(params, FusionParams) else None
    variables = as_variables(_model_params(params))
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
    # ESPnet's maxlenratio / minlenratio, from each row's valid encoder frames (traced).
    enc_lengths = jnp.sum(enc_mask, axis=1).astype(jnp.int32)  # [batch]
    cap, min_rows = length_limits(options, enc_lengths, options.min_length, s.max_length)
    options = options._replace(min_length=jnp.repeat(min_rows, s.num_beams))  # [batch * beams]
    process = make_logits_processor(s, options)
    if s.do_sample and options.rng.ndim != 2:
        raise ValueError("sampling needs SearchOptions.rng: [batch, 2] uint32 keys per row")
    reorder, grow = reorder_self_cache, grow_self_cache
    fused = {}
    if fusion is not None and (s.ctc_weight > 0 or s.lm_config is not None or s.length_bonus):
        from s2t_jax.decoding.fusion import wrap_search
        from s2t_jax.models.lm import TransformerLM

        step_fn, cache, rescore, reorder, grow = wrap_search(
            step_fn,
            cache,
            enc=enc,
            enc_mask=enc_mask,
            beams=s.num_beams,
            max_length=s.max_length,
            eos_token_id=s.eos_token_id,
            blank=module.config.bos_token_id,
            fusion=fusion,
            lm_module=TransformerLM(s.lm_config) if s.lm_config is not None else None,
            ctc_weight=s.ctc_weight,
            lm_weight=s.lm_weight,
            length_bonus=s.length_bonus,
            pre_beam=min(s.ctc_pre_beam, module.config.vocab_size),
            forced_bos=options.forced_bos_token_id,
        )
        fused = {"rescore": rescore}
    common = dict(
        max_length=s.max_length,
        decoder_start_token_id=s.decoder_start_token_id,
        eos_token_id=s.eos_token_id,
        pad_token_id=s.pad_token_id,
        process_scores=process,
        cache_segments=segments,
        grow_cache=grow,
        sample_keys=options.rng if s.do_sample else None,
        outputs=s.outputs,
        row_valid=jnp.any(enc_mask, axis=1),  # rows with no frame only pad the batch
        vocab_size=module.config.vocab_size,
        row_cap=cap if s.eos_token_id is not None else None,
        **fused,
    )
    if s.num_beams == 1:
        out = greedy_search(step_fn, cache, batch, **common)
        ids, lengths, scores = out[:3]
        return ids, scores, lengths, (out[3] if s.outputs else {})
    out = beam_search(
        step_fn,
        cache,
        batch,
        num_beams=s.num_beams,
        length_penalty=options.length_penalty,
        early_stopping=options.early_stopping,
        num_return_sequences=s.num_beams,
        reorder_cache=reorder,
        penalty_table=options.penalty_table,
        **common,
    )
    return (*out[:3], out[3] if s.outputs else {})


def select_returned(ids, scores, lengths, num_beams: int, num_return: int, extras=None):
    """Keeps the best `num_return` of each item's `num_beams` rows (already best first);
    `extras` (search's recorded outputs), if given, is returned too, its beam_indices cut."""

    def keep(x):  # [batch * beams, ...] -> [batch * num_return, ...]
        x = x.reshape(-1, num_beams, *x.shape[1:])[:, :num_return]
        return x.reshape(-1, *x.shape[2:])

    if num_return != num_beams:
        ids, scores, lengths = keep(ids), keep(scores), keep(lengths)
    if extras is None:
        return ids, scores, lengths
    if "beam_indices" in extras and num_return != num_beams:
        extras = dict(extras, beam_indices=keep(extras["beam_indices"]))
    return ids, scores, lengths, extras


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
    if static.outputs:
        raise ValueError("per-step outputs are recorded on one device only (mesh=None)")
    split = {}  # which options hold a value per row -> the split search

    def call(params, features, mask, options):
        rows = per_row(options)  # static shapes, also when traced
        if rows not in split:
            spec = SearchOptions(*(SAME for _ in options))._replace(
                **{name: ROWS for name, r in zip(PER_ROW_FIELDS, rows) if r}
            )
            split[rows] = split_over(mesh, run, (SAME, ROWS, ROWS, spec), ROWS)
        return split[rows](params, features, mask, options)

    return call


def _encoder_fn(config, mesh: Mesh | None = None):
    """jit(params, features, mask, conv_frames) -> (enc [batch, src, d_model], enc_mask
    [batch, src]); conv_frames: int32 scalar, see SearchOptions."""
    module = Speech2Text(config)
    dtype = DTYPES[config.dtype]

    def run(params, features, mask, conv_frames):
        ENCODER_TRACES[features.shape] += 1  # runs at trace time only
        features = jnp.asarray(features, dtype)
        return encode(module, params, features, mask, conv_frames)

    return split_over(mesh, run, (SAME, ROWS, ROWS, SAME), (ROWS, ROWS))


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


_OWN_SETTINGS = ("ctc_weight", "ctc_pre_beam", "length_bonus", "maxlenratio", "minlenratio")


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
        # Our own settings (not transformers' generation keys) are set after resolving.
        ours = {k: overrides.pop(k) for k in _OWN_SETTINGS if k in overrides}
        settings = dataclasses.replace(resolve_settings(config, **overrides), **ours)
    elif overrides:
        settings = dataclasses.replace(settings, **overrides)
    settings.validate(config.vocab_size)
    if settings.do_sample and settings.num_beams == 1 and settings.num_return_sequences > 1:
        raise ValueError(
            "make_generate_fn samples one sequence per row: repeat the rows instead of "
            f"num_return_sequences={settings.num_return_sequences} (generate() does this)"
        )
    run = _search_fn(config, settings.static(), mesh=mesh if mesh and mesh.size > 1 else None)
    options = search_options(settings)
    beams, returned = settings.num_beams, settings.num_return_sequences

    def generate_fn(
        params,
        features,
        attention_mask=None,
        forced_bos_token_ids=None,
        prng_key=None,
        conv_frames=None,
    ):
        # forced_bos_token_ids: optional [batch] int32, a forced first token per utterance
        # (-1: none) in place of the single forced_bos_token_id. prng_key: a JAX PRNG key,
        # needed when sampling; row i draws with fold_in(prng_key, i). conv_frames: the
        # frames before the caller's own bucket padding (int32 scalar, may be traced): the
        # convs see zeros past them, so that padding changes nothing (see SearchOptions).
        opts = options
        if conv_frames is not None:
            opts = opts._replace(conv_frames=jnp.asarray(conv_frames, jnp.int32))
        if forced_bos_token_ids is not None:
            opts = opts._replace(forced_bos_token_id=jnp.asarray(forced_bos_token_ids, jnp.int32))
        if settings.do_sample:
            if prng_key is None:
                raise ValueError("sampling (do_sample=True) needs prng_key=")
            opts = opts._replace(rng=row_keys(prng_key, features.shape[0]))
        ids, scores, lengths, _ = run(params, features, attention_mask, opts)
        ids, scores, lengths = select_returned(ids, scores, lengths, beams, returned)
        return (ids, scores, lengths) if return_lengths else (ids, scores)

    return jax.jit(generate_fn)
