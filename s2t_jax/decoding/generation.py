"""`generate`: jitted greedy and beam search with transformers' arguments, defaults and output.

Two layers:

* `make_generate_fn(config, **settings)` is the pure API: it returns one jitted
  `fn(params, features, attention_mask) -> (ids, scores)` that runs the encoder once, projects
  cross-attention K/V once, preallocates self-attention K/V for `max_length`, and runs the whole
  search in a `lax.while_loop` that exits as soon as the batch is done. The training loop and
  eval.py call it with a params pytree. `ids` is [batch * num_return_sequences, max_length],
  filled after each sequence's end.
* `generate(model, features, ...)` resolves the defaults as transformers does (kwargs, then
  generation_config.json, else config.json, then transformers' global defaults), pads frames up
  to a bucket so the number of compilations stays bounded, calls the cached jitted function and
  trims the ids to the longest sequence, which is exactly the shape transformers returns.

Compilations: one per (padded input shape, static settings), where the static settings are
num_beams, max_length, no_repeat_ngram_size and the special token ids. min_length,
length_penalty, early_stopping, forced_bos_token_id and num_return_sequences are runtime values
of the same compiled search. With bucketing, at most len(buckets) x (distinct batch sizes) x
(distinct static settings). `enable_compilation_cache(dir)` keeps them on disk across processes.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from s2t_jax.decoding.beam_search import beam_search, early_stopping_code, length_penalty_table
from s2t_jax.decoding.buckets import DEFAULT_BUCKETS, bucket_for, pad_axis
from s2t_jax.decoding.greedy import greedy_search
from s2t_jax.models.layers import DTYPES
from s2t_jax.models.model import Speech2Text
from s2t_jax.models.subsampler import subsampled_lengths
from s2t_jax.parallel.mesh import make_mesh, select_devices

# Times each search has been traced, by static settings; a second call that only changes the
# input length within a bucket must not add to it (see tests/decoding/test_compile.py).
TRACE_COUNTS: collections.Counter = collections.Counter()
# Encoder traces by padded input shape, for generate()'s length groups (see length_groups).
ENCODER_TRACES: collections.Counter = collections.Counter()

# transformers' global defaults (GenerationConfig), used when no file sets a value.
GLOBAL_DEFAULTS = dict(
    num_beams=1,
    max_length=20,
    min_length=0,
    length_penalty=1.0,
    early_stopping=False,
    no_repeat_ngram_size=0,
    num_return_sequences=1,
    forced_bos_token_id=None,
)
_TOKEN_KEYS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")
_FILE_KEYS = tuple(GLOBAL_DEFAULTS) + _TOKEN_KEYS


@dataclasses.dataclass(frozen=True)
class StaticSettings:
    """What shapes the compiled search; each distinct value (per input shape) is one compile.
    Everything else (min_length, length_penalty, early_stopping, forced BOS, how many sequences
    are returned) is a runtime value of the same compiled function."""

    num_beams: int
    max_length: int
    no_repeat_ngram_size: int
    decoder_start_token_id: int
    eos_token_id: int | None
    pad_token_id: int | None


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """Every setting of one search, resolved (see resolve_settings)."""

    num_beams: int = 1
    max_length: int = 21
    min_length: int = 0
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    no_repeat_ngram_size: int = 0
    num_return_sequences: int = 1
    forced_bos_token_id: int | None = None
    decoder_start_token_id: int = 2
    eos_token_id: int | None = 2
    pad_token_id: int | None = 1

    def static(self) -> StaticSettings:
        pad = self.pad_token_id if self.pad_token_id is not None else self.eos_token_id
        return StaticSettings(
            num_beams=self.num_beams,
            max_length=self.max_length,
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            decoder_start_token_id=self.decoder_start_token_id,
            eos_token_id=self.eos_token_id,
            pad_token_id=pad,
        )

    def validate(self, vocab_size: int) -> None:
        errors = []
        if self.num_beams < 1:
            errors.append(f"num_beams={self.num_beams} must be >= 1")
        if self.max_length < 2:
            errors.append(
                f"max_length={self.max_length} leaves no room after the decoder start token "
                "(transformers counts the start token in max_length; use max_new_tokens)"
            )
        if not 1 <= self.num_return_sequences <= self.num_beams:
            errors.append(
                f"num_return_sequences={self.num_return_sequences} must be in "
                f"[1, num_beams={self.num_beams}] (greedy search returns one sequence)"
            )
        if self.early_stopping not in (True, False, "never"):
            errors.append(f"early_stopping={self.early_stopping!r} must be True, False or 'never'")
        if self.min_length < 0 or self.no_repeat_ngram_size < 0:
            errors.append("min_length and no_repeat_ngram_size must be >= 0")
        for name in ("forced_bos_token_id", "decoder_start_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < vocab_size:
                errors.append(f"{name}={value} must be in [0, vocab_size={vocab_size})")
        if errors:
            raise ValueError("Invalid generation settings: " + "; ".join(errors))


# --- logits processors ------------------------------------------------------------------------


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


# --- the jitted search ------------------------------------------------------------------------


# The searches run their own cached decoder step. It calls the model's own submodules
# (projections, layer norms, FFN, embeddings, LM head), so the weights and the arithmetic are the
# model's, but lays the cache out for decoding rather than training:
#   self_k, self_v: per layer [batch * beams, heads, length, head_dim]: heads before time, so
#     attention needs no per-step transpose of the cache (with the model's [batch, length,
#     heads, head_dim] XLA transposed every cached K/V on every step). Beam search gathers
#     these rows by beam index each step. (Keeping K/V in place and gathering only an
#     ancestry table, with each query scored against all beams of its item, reads less memory
#     but measured ~40% slower here: XLA:CPU runs those [beams x length] products poorly.)
#   cross_k [batch, heads, head_dim, src_len], cross_v [batch, heads, src_len, head_dim], per
#     layer: once per item, not per beam, since all beams of an item attend to the same
#     encoder states; reading them once per item instead of once per beam is most of a beam
#     step's memory traffic on long inputs. K is stored transposed so that q.K is a plain
#     batched matmul, which XLA:CPU runs ~4x faster than the q.K^T form.
#   enc_mask: [batch, src_len] bool.
# `length` grows by segments (see cache_segments): a step attends to, and beam search gathers,
# a cache at most about twice as long as what has been generated, not max_length.


def _init_search_cache(model: Speech2Text, enc, enc_mask, beams: int, length: int):
    cfg = model.config
    heads = cfg.decoder_attention_heads
    shape = (enc.shape[0] * beams, heads, length, cfg.d_model // heads)
    dtype = DTYPES[cfg.dtype]
    cross = [layer.cross_key_value(enc) for layer in model.decoder.layers]  # [b, src, h, hd]
    return {
        "self_k": tuple(jnp.zeros(shape, dtype) for _ in cross),
        "self_v": tuple(jnp.zeros(shape, dtype) for _ in cross),
        "cross_k": tuple(k.transpose(0, 2, 3, 1) for k, _ in cross),  # [batch, h, hd, src]
        "cross_v": tuple(v.transpose(0, 2, 1, 3) for _, v in cross),  # [batch, h, src, hd]
        "enc_mask": enc_mask,
    }


def _softmax(scores, mask, dtype):
    """Masked softmax in float32, as the model's attention masks."""
    scores = jnp.where(mask, scores.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(scores, axis=-1).astype(dtype)


def _search_step(model: Speech2Text, tokens, index, cache, beams: int, max_length: int):
    """tokens [batch * beams] at position `index` -> (logits [batch * beams, vocab], cache)."""
    dec = model.decoder
    rows, d = tokens.shape[0], model.config.d_model
    batch = rows // beams
    length = cache["self_k"][0].shape[2]
    x = dec._embed(tokens[:, None], offset=index, max_position=max_length)  # [rows, 1, d]
    self_mask = (jnp.arange(length) <= index)[None, None, None, :]  # [1, 1, 1, length]
    cross_mask = cache["enc_mask"][:, None, None, :]  # [batch, 1, 1, src]
    self_k, self_v = [], []
    for i, layer in enumerate(dec.layers):
        h = layer.self_attn_layer_norm(x)
        q = layer.self_attn.query(h).transpose(0, 2, 1, 3)  # [rows, heads, 1, hd]
        k, v = layer.self_attn.key_value(h)  # [rows, 1, heads, hd]
        at = (0, 0, index, 0)
        k_cache = lax.dynamic_update_slice(cache["self_k"][i], k.transpose(0, 2, 1, 3), at)
        v_cache = lax.dynamic_update_slice(cache["self_v"][i], v.transpose(0, 2, 1, 3), at)
        self_k.append(k_cache)
        self_v.append(v_cache)
        scores = lax.dot_general(q, k_cache, (((3,), (3,)), ((0, 1), (0, 1))))  # [r, h, 1, len]
        ctx = jnp.matmul(_softmax(scores, self_mask, v_cache.dtype), v_cache)  # [r, h, 1, hd]
        x = x + layer.self_attn.out_proj(ctx.transpose(0, 2, 1, 3).reshape(rows, 1, d))

        h = layer.encoder_attn_layer_norm(x)
        q = layer.encoder_attn.query(h).reshape(batch, beams, *q.shape[1:2], q.shape[3])
        q = q.transpose(0, 2, 1, 3)  # [batch, heads, beams, hd]: an item's beams together
        scores = jnp.matmul(q, cache["cross_k"][i])  # [batch, heads, beams, src]
        ctx = jnp.matmul(_softmax(scores, cross_mask, x.dtype), cache["cross_v"][i])
        x = x + layer.encoder_attn.out_proj(ctx.transpose(0, 2, 1, 3).reshape(rows, 1, d))
        x = x + layer.ffn(layer.final_layer_norm(x), True)
    cache = dict(cache, self_k=tuple(self_k), self_v=tuple(self_v))
    return model.logits(dec.layer_norm(x)[:, 0]), cache


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
        variables, enc, enc_mask, s.num_beams, segments[0], method=_init_search_cache
    )

    def step_fn(tokens, index, cache):
        return module.apply(
            variables, tokens, index, cache, s.num_beams, s.max_length, method=_search_step
        )

    if options.forced_bos_token_id.ndim and s.num_beams > 1:  # [batch] -> [batch * beams]
        bos = jnp.repeat(options.forced_bos_token_id, s.num_beams)
        options = options._replace(forced_bos_token_id=bos)
    process = make_logits_processor(s.no_repeat_ngram_size, s.eos_token_id, options)
    if s.num_beams == 1:
        ids, lengths, scores = greedy_search(
            step_fn,
            cache,
            batch,
            max_length=s.max_length,
            decoder_start_token_id=s.decoder_start_token_id,
            eos_token_id=s.eos_token_id,
            pad_token_id=s.pad_token_id,
            process_scores=process,
            cache_segments=segments,
            grow_cache=grow_self_cache,
        )
        return ids, scores, lengths
    return beam_search(
        step_fn,
        cache,
        batch,
        num_beams=s.num_beams,
        max_length=s.max_length,
        decoder_start_token_id=s.decoder_start_token_id,
        eos_token_id=s.eos_token_id,
        pad_token_id=s.pad_token_id,
        length_penalty=options.length_penalty,
        early_stopping=options.early_stopping,
        num_return_sequences=s.num_beams,
        process_scores=process,
        reorder_cache=reorder_self_cache,
        penalty_table=options.penalty_table,
        cache_segments=segments,
        grow_cache=grow_self_cache,
    )


def _select_returned(ids, scores, lengths, num_beams: int, num_return: int):
    """Keeps the best `num_return` of each item's `num_beams` rows (already best first)."""
    if num_return == num_beams:
        return ids, scores, lengths

    def keep(x):  # [batch * beams, ...] -> [batch * num_return, ...]
        return x.reshape(-1, num_beams, *x.shape[1:])[:, :num_return].reshape(-1, *x.shape[1:])

    return keep(ids), keep(scores), keep(lengths)


ROWS, SAME = P("data"), P()  # split by rows over the mesh; the same on every device


def _split_over(mesh: Mesh | None, fn, in_specs, out_specs):
    """jit(fn), or with a mesh, jit of fn run on each device's block of rows (specs as
    shard_map's). Each device runs its own search on its rows, with no communication at all:
    its while loop stops when its own rows are done.
    """
    if mesh is None:
        return jax.jit(fn)
    # check_vma off: the search's loop carries mix replicated (step counter) and per-device
    # (sequences) values, which is exactly what running one search per device means.
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    return jax.jit(mapped)


def _round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


def _search_fn(config, static: StaticSettings, encoded: bool = False, mesh: Mesh | None = None):
    """jit(params, features, mask, options) -> (ids, scores, lengths) for every beam slot.

    encoded=True: jit(params, enc, enc_mask, options), the search from encoder states.
    mesh: a ("data",) mesh to split the rows over (see generation_mesh); the inputs must then
    be placed by `_on_mesh` and the batch be a multiple of the mesh size.
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
            split[per_row] = _split_over(mesh, run, (SAME, ROWS, ROWS, spec), ROWS)
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

    return _split_over(mesh, run, (SAME, ROWS, ROWS), (ROWS, ROWS))


def make_generate_fn(
    config,
    *,
    num_beams: int | None = None,
    max_length: int | None = None,
    min_length: int = 0,
    length_penalty: float = 1.0,
    early_stopping: bool | str | None = None,
    no_repeat_ngram_size: int = 0,
    num_return_sequences: int = 1,
    forced_bos_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    return_lengths: bool = False,
    mesh: Mesh | None = None,
):
    """One jitted `fn(params, features, attention_mask) -> (ids, scores)` for these settings.

    Unset values come from `config` (num_beams, max_length, early_stopping and the token ids).
    ids: [batch * num_return_sequences, max_length] int32, the decoder start token first and
    the fill token (pad) after each sequence's end; scores: beam search's length-penalised
    sequence scores, or greedy's summed token log-probabilities. `return_lengths=True` adds
    lengths [batch * num_return_sequences] (start token included): transformers' output is
    ids[:, :lengths.max()]. The function retraces only for a new input shape.

    mesh: a ("data",) mesh whose devices each run the search on their block of rows (see
    `generate`'s devices); the batch must then be a multiple of its size, params replicated
    on it and the rows split over it.
    """
    settings = GenerationSettings(
        num_beams=int(config.num_beams if num_beams is None else num_beams),
        max_length=int(config.max_length if max_length is None else max_length),
        min_length=int(min_length),
        length_penalty=float(length_penalty),
        early_stopping=config.early_stopping if early_stopping is None else early_stopping,
        no_repeat_ngram_size=int(no_repeat_ngram_size or 0),
        num_return_sequences=int(num_return_sequences),
        forced_bos_token_id=forced_bos_token_id,
        decoder_start_token_id=int(
            config.decoder_start_token_id
            if decoder_start_token_id is None
            else decoder_start_token_id
        ),
        eos_token_id=config.eos_token_id if eos_token_id is None else eos_token_id,
        pad_token_id=config.pad_token_id if pad_token_id is None else pad_token_id,
    )
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
        ids, scores, lengths = _select_returned(ids, scores, lengths, beams, returned)
        return (ids, scores, lengths) if return_lengths else (ids, scores)

    return jax.jit(generate_fn)


def enable_compilation_cache(directory: str | os.PathLike, min_compile_seconds: float = 0.0):
    """Turns on JAX's persistent compilation cache in `directory`.

    A later process with the same shapes and settings loads the compiled search from disk
    instead of compiling it again (seconds saved per bucket on a cold start).
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return directory


# --- defaults, as transformers resolves them ---------------------------------------------------


def _read_json(path: str) -> dict[str, Any] | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def generation_defaults(model) -> tuple[dict[str, Any], bool]:
    """(defaults, max_length_was_set) for `model`.

    As transformers 5.x: a generation_config.json in the model's directory wins outright (the
    generation keys of config.json are then ignored, even when the file was made from it);
    without one, config.json's keys are used. A model not loaded from a directory uses its
    config object. Token ids a file lacks come from the model config. Missing values take
    transformers' global defaults; when nothing set max_length, transformers generates 20 new
    tokens, hence the flag.
    """
    config = model.config
    source = getattr(model, "source_dir", None)
    data = None
    if source:
        data = _read_json(os.path.join(source, "generation_config.json"))
        if data is None:
            data = _read_json(os.path.join(source, "config.json"))
    if data is None:
        data = {k: getattr(config, k) for k in ("num_beams", "max_length", "early_stopping")}
    found = {k: data[k] for k in _FILE_KEYS if data.get(k) is not None}
    defaults = {**GLOBAL_DEFAULTS, **found}
    for key in _TOKEN_KEYS:
        if key not in found:
            defaults[key] = getattr(config, key, None)
    return defaults, "max_length" in found


def _single_id(value, name):
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise NotImplementedError(f"{name} with several ids ({value}) is not supported")
        value = value[0]
    return None if value is None else int(value)


def resolve_settings(model, **kwargs) -> GenerationSettings:
    """kwargs > the model's generation files > global defaults, with transformers' length rules."""
    defaults, max_length_set = generation_defaults(model)
    given = {k: v for k, v in kwargs.items() if v is not None}
    values = {**defaults, **given}
    if "max_new_tokens" in given:
        max_length = int(given["max_new_tokens"]) + 1  # + the decoder start token
    elif "max_length" in given or max_length_set:
        max_length = int(values["max_length"])
    else:
        max_length = int(GLOBAL_DEFAULTS["max_length"]) + 1
    min_length = int(values.get("min_length") or 0)
    if given.get("min_new_tokens") is not None:
        min_length = int(given["min_new_tokens"]) + 1
    eos = _single_id(values.get("eos_token_id"), "eos_token_id")
    pad = _single_id(values.get("pad_token_id"), "pad_token_id")
    start = values.get("decoder_start_token_id")
    if start is None:
        start = values.get("bos_token_id")
    if start is None:
        raise ValueError("decoder_start_token_id (or bos_token_id) must be set for generation")
    return GenerationSettings(
        num_beams=int(values["num_beams"]),
        max_length=max_length,
        min_length=min_length,
        length_penalty=float(values["length_penalty"]),
        early_stopping=values["early_stopping"],
        no_repeat_ngram_size=int(values["no_repeat_ngram_size"] or 0),
        num_return_sequences=int(values["num_return_sequences"]),
        forced_bos_token_id=_single_id(values.get("forced_bos_token_id"), "forced_bos_token_id"),
        decoder_start_token_id=_single_id(start, "decoder_start_token_id"),
        eos_token_id=eos,
        pad_token_id=pad if pad is not None else eos,
    )


# --- the user-facing call ---------------------------------------------------------------------


@dataclasses.dataclass
class GenerateOutput:
    """transformers' return_dict_in_generate output, the fields we produce."""

    sequences: np.ndarray
    sequences_scores: np.ndarray | None = None

    def __getitem__(self, key):
        return getattr(self, key)


_SEARCHES: dict = {}  # (architecture key, static settings) -> jitted search
_NOT_ARCHITECTURE = ("extra", "num_beams", "max_length", "early_stopping")
_ACCEPTED_NOOPS = {"do_sample": False, "use_cache": True, "output_attentions": False}


def _architecture_key(config) -> str:
    """The config fields that shape the network; models that agree on them (two loads of one
    checkpoint, a fine-tuned copy) share compiled searches, since params are an argument."""
    fields = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in _NOT_ARCHITECTURE
    }
    return json.dumps(fields, sort_keys=True, default=str)


def _search_for(model, static: StaticSettings, encoded: bool = False, mesh: Mesh | None = None):
    key = (_architecture_key(model.config), static, encoded, mesh)
    if key not in _SEARCHES:
        _SEARCHES[key] = _search_fn(model.config, static, encoded, mesh)
    return _SEARCHES[key]


# --- splitting a batch over devices -----------------------------------------------------------


def generation_mesh(devices, rows: int) -> Mesh | None:
    """The mesh whose "data" axis generate() splits `rows` rows over, or None for one device.

    devices: None for every local device, a count for the first n of them, or a list. No more
    devices than rows are used, so each holds at least one real row. Why split: a decoder
    step is a few hundred small operations bound by memory bandwidth, which XLA runs one after
    another on one thread; devices run their searches side by side (on a CPU host, see
    host_devices.use_cpu_cores for one device per core).
    """
    chosen = select_devices(devices, local=True)[: max(1, int(rows))]
    return make_mesh(None, chosen) if len(chosen) > 1 else None


def _mesh_size(mesh: Mesh | None) -> int:
    return 1 if mesh is None else mesh.size


_ON_DEVICE: dict = {}  # device -> (params, their copy on that device)
# mesh -> (params, their replicated arrays over the mesh): assembling ~360 arrays from the
# devices' copies costs ~8 ms, too much to redo on every call.
_ON_MESH: dict = {}


def _replicated(params, mesh: Mesh):
    """params as arrays replicated over `mesh`. Each device gets one copy per params object,
    shared by every mesh it is in (calls with fewer rows use fewer devices), not per call."""
    hit = _ON_MESH.get(mesh)
    devices = list(mesh.devices.flat)
    if hit is not None and hit[0] is params:
        # Still the devices' current copies (another params object may have replaced them,
        # and then this mesh's arrays would hold a second copy).
        if all(_ON_DEVICE.get(d, (None,))[0] is params for d in devices):
            return hit[1]
    leaves, tree = jax.tree.flatten(params)
    copies = []
    for device in devices:
        on = _ON_DEVICE.get(device)
        if on is None or on[0] is not params:
            on = (params, jax.tree.leaves(jax.device_put(params, device)))
            _ON_DEVICE[device] = on
        copies.append(on[1])
    same = NamedSharding(mesh, SAME)
    arrays = [
        jax.make_array_from_single_device_arrays(np.shape(leaf), same, [c[i] for c in copies])
        for i, leaf in enumerate(leaves)
    ]
    replicated = jax.tree.unflatten(tree, arrays)
    _ON_MESH[mesh] = (params, replicated)
    return replicated


def _on_mesh(mesh: Mesh | None, params, *rows):
    """(params, *rows) placed for a search split over `mesh`: params replicated (see
    _replicated), row arrays split by rows."""
    if mesh is None:
        return (params, *rows)
    split = NamedSharding(mesh, ROWS)
    return (_replicated(params, mesh), *(jax.device_put(x, split) for x in rows))


def receptive_margin(config) -> int:
    """Frames past an utterance's end that its valid encoder states can see.

    Each stride-2 conv with kernel k maps output frame i to inputs 2i - k//2 .. 2i + k//2, so
    the last valid state of n layers reaches sum_j 2**(j-1) * (k_j // 2) frames past the end
    (6 for the released 5, 5 kernels). Attention masks everything further; so encoding an
    utterance padded to at least length + margin gives the states it gets in any longer batch.
    """
    return sum(2**j * (k // 2) for j, k in enumerate(config.conv_kernel_sizes))


def _pow2(n) -> int:
    """The smallest power of two >= n (n >= 1): group batch sizes, so compiles stay bounded."""
    return 1 << (int(n) - 1).bit_length()


def _group_inputs(features, mask, rows, frames: int, shards: int = 1):
    """A group's features and mask: its rows, cut to its frames, padded to a power of two
    (and to a multiple of `shards`, the devices it is split over)."""
    size = _round_up(_pow2(len(rows)), shards)
    return (
        pad_axis(features[rows, :frames], size, axis=0),
        pad_axis(mask[rows, :frames], size, axis=0),
    )


def _row_order(groups):
    """Index that puts the concatenation of the groups' rows back in the batch's row order."""
    return np.argsort(np.concatenate([rows for rows, _ in groups]))


def length_groups(lengths, frames: int, buckets, config, overhead: int = 64):
    """Splits a padded batch into groups of similar length, each encoded at its own bucket.

    lengths [batch] valid frames; frames: the batch's padded length (itself a bucket). Returns
    [(rows, group_frames), ...], or None when one group (the plain padded batch) is cheapest.
    A group's rows are padded up to a power of two (bounding encoder compiles to
    len(buckets) x log2(batch) shapes), so the cost of a group is padded rows x frames, plus
    `overhead` frames per call. The split is the cheapest partition of the rows sorted by
    length into runs (a small dynamic program over the distinct buckets).
    """
    if not buckets:
        return None
    lengths = np.asarray(lengths)
    need = np.minimum(lengths + receptive_margin(config), frames)
    sizes = np.asarray([min(bucket_for(n, buckets), frames) for n in need])
    order = np.argsort(sizes, kind="stable")
    distinct = sorted(set(sizes.tolist()))
    upto = np.cumsum([int((sizes == b).sum()) for b in distinct])  # rows with bucket <= b

    # best[j]: cheapest cost of the rows in the first j distinct buckets, with its cut points.
    best = [(0, [])] + [None] * len(distinct)
    for j in range(1, len(distinct) + 1):
        for i in range(j):
            rows = upto[j - 1] - (upto[i - 1] if i else 0)
            cost = best[i][0] + _pow2(rows) * distinct[j - 1] + overhead
            if best[j] is None or cost < best[j][0]:
                best[j] = (cost, best[i][1] + [j])
    cuts = best[-1][1]
    if len(cuts) == 1:
        return None
    groups, start = [], 0
    for j in cuts:
        stop = int(upto[j - 1])
        groups.append((order[start:stop], int(distinct[j - 1])))
        start = stop
    return groups


# A batch is split into separate searches only when every part keeps at least this many rows:
# a search step costs a fixed ~100 small ops however few rows it has, so small parts would
# spend more on steps than they save in memory traffic.
MIN_SEARCH_GROUP_ROWS = 8
# Frames x rows one more search costs, in the cost model of `length_groups`.
SEARCH_GROUP_OVERHEAD = 4096


def _search_groups(lengths, frames: int, buckets, config):
    """Length groups for running separate searches, or None (see MIN_SEARCH_GROUP_ROWS).

    Why: a decoding step reads every layer's cross-attention K/V for all source positions of
    all rows; at larger batches that memory traffic is most of a step. A group of short
    utterances searched on its own reads only its own length, and stops when its own rows
    are done instead of when the batch's longest output is.
    """
    groups = length_groups(lengths, frames, buckets, config, overhead=SEARCH_GROUP_OVERHEAD)
    if groups is None or min(len(rows) for rows, _ in groups) < MIN_SEARCH_GROUP_ROWS:
        return None
    return groups


def _search_in_groups(model, params, features, mask, groups, settings, mesh=None):
    """One search per length group -> (ids, scores, lengths) for the returned sequences of
    every row, in the batch's row order, as _select_returned gives them for one search."""
    run = _search_for(model, settings.static(), mesh=mesh)
    options = search_options(settings)
    per_row = settings.num_return_sequences
    parts = []
    for rows, frames in groups:
        f, m = _group_inputs(features, mask, rows, frames, _mesh_size(mesh))
        out = [np.asarray(x) for x in run(*_on_mesh(mesh, params, f, m), options)]
        returned = _select_returned(*out, settings.num_beams, per_row)
        parts.append([x[: len(rows) * per_row] for x in returned])  # padding rows dropped
    # Each group gives [its rows * per_row, ...], a row's sequences together: move whole rows.
    flat = (_row_order(groups)[:, None] * per_row + np.arange(per_row)).reshape(-1)
    return tuple(np.concatenate(part)[flat] for part in zip(*parts))


_ENCODERS: dict = {}


def _encode_in_groups(model, params, features, mask, groups, mesh=None):
    """Encodes each group at its own length -> enc [batch, src, d], enc_mask [batch, src] in
    the batch's row order, padded to the batch's full subsampled length (so the search
    compiles once per padded input shape, grouped or not)."""
    key = (_architecture_key(model.config), mesh)
    if key not in _ENCODERS:
        _ENCODERS[key] = _encoder_fn(model.config, mesh)
    encode = _ENCODERS[key]
    src = int(subsampled_lengths(np.int64(features.shape[1]), model.config.num_conv_layers))
    parts, masks = [], []
    for rows, frames in groups:
        group = _group_inputs(features, mask, rows, frames, _mesh_size(mesh))
        enc, enc_mask = encode(*_on_mesh(mesh, params, *group))
        pad = src - enc.shape[1]
        parts.append(jnp.pad(enc[: len(rows)], ((0, 0), (0, pad), (0, 0))))
        masks.append(jnp.pad(enc_mask[: len(rows)], ((0, 0), (0, pad))))
    order = _row_order(groups)
    return jnp.concatenate(parts)[order], jnp.concatenate(masks)[order]


def generate(
    model,
    input_features,
    attention_mask=None,
    *,
    num_beams: int | None = None,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    min_length: int | None = None,
    min_new_tokens: int | None = None,
    length_penalty: float | None = None,
    early_stopping: bool | str | None = None,
    no_repeat_ngram_size: int | None = None,
    num_return_sequences: int | None = None,
    forced_bos_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    return_scores: bool = False,
    return_dict_in_generate: bool = False,
    output_scores: bool = False,
    buckets=DEFAULT_BUCKETS,
    batch_buckets=None,
    group_by_length: bool = True,
    devices=None,
    params=None,
    **unsupported,
):
    """Greedy (num_beams=1) or beam search, returning ids shaped as transformers returns them.

    input_features [batch, frames, feat]; attention_mask [batch, frames] (1 = real frame),
    None meaning all frames are real. Frames are padded up to `buckets` (None: no padding) and,
    if `batch_buckets` is set, the batch up to one of those sizes, so repeated calls reuse a few
    compiled functions. Padding is masked, but unless config.zero_padded_frames is on, the conv
    subsampler lets it touch the last valid frames, as more padding does in transformers: to
    compare with transformers on given features, pass buckets=None.

    With buckets and `group_by_length` (the default), a batch of mixed lengths is encoded in
    groups of similar length, each padded only to its own bucket (see `length_groups`), and
    the search runs on the reassembled encoder states: the same states on every valid frame,
    without the encoder work on another utterance's padding.

    With several local devices (GPUs, TPU cores, or CPU cores made devices by
    host_devices.use_cpu_cores), the rows are split over them and each device runs its own
    search on its rows (`devices`: None for all local devices, a count, or a list; 1 for
    one). The batch is padded to a multiple of the device count; the ids do not change.

    Returns ids [batch * num_return_sequences, longest] (numpy int32, decoder start token
    first, pad after eos); with return_scores=True, (ids, scores); with
    return_dict_in_generate=True, a GenerateOutput (sequences_scores only with output_scores).
    """
    for key, value in unsupported.items():
        if key not in _ACCEPTED_NOOPS or value != _ACCEPTED_NOOPS[key]:
            raise TypeError(f"generate() does not support {key}={value!r}")
    settings = resolve_settings(
        model,
        num_beams=num_beams,
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        min_length=min_length,
        min_new_tokens=min_new_tokens,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        no_repeat_ngram_size=no_repeat_ngram_size,
        num_return_sequences=num_return_sequences,
        forced_bos_token_id=forced_bos_token_id,
        decoder_start_token_id=decoder_start_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    features = np.asarray(input_features, np.float32)
    if features.ndim == 2:
        features = features[None]
    cfg = model.config
    expected = cfg.input_feat_per_channel * cfg.input_channels
    if features.ndim != 3 or features.shape[-1] != expected:
        raise ValueError(
            f"input_features must be [batch, frames, {expected}], got shape {features.shape}"
        )
    batch, frames = features.shape[:2]
    if attention_mask is None:
        mask = np.ones((batch, frames), np.int32)
    else:
        mask = np.asarray(attention_mask, np.int32).reshape(batch, -1)
        if mask.shape[1] != frames:
            raise ValueError(f"attention_mask has {mask.shape[1]} frames, features {frames}")
    padded_frames = bucket_for(frames, buckets)
    padded_batch = bucket_for(batch, batch_buckets)
    mesh = generation_mesh(devices, padded_batch)
    padded_batch = _round_up(padded_batch, _mesh_size(mesh))
    features = pad_axis(pad_axis(features, padded_frames, axis=1), padded_batch, axis=0)
    mask = pad_axis(pad_axis(mask, padded_frames, axis=1), padded_batch, axis=0)

    settings.validate(cfg.vocab_size)
    params = model.params if params is None else params
    lengths_in = mask.sum(1)
    split = _search_groups(lengths_in, padded_frames, buckets, cfg) if group_by_length else None
    groups = None
    if group_by_length and split is None:
        groups = length_groups(lengths_in, padded_frames, buckets, cfg)
    if split is not None:
        ids, scores, lengths = _search_in_groups(
            model, params, features, mask, split, settings, mesh
        )
    else:
        if groups is None:
            run = _search_for(model, settings.static(), mesh=mesh)
            out = run(*_on_mesh(mesh, params, features, mask), search_options(settings))
        else:
            enc, enc_mask = _encode_in_groups(model, params, features, mask, groups, mesh)
            run = _search_for(model, settings.static(), encoded=True, mesh=mesh)
            out = run(*_on_mesh(mesh, params, enc, enc_mask), search_options(settings))
        out = [np.asarray(x) for x in out]  # one transfer at the end of the search
        ids, scores, lengths = _select_returned(
            *out, settings.num_beams, settings.num_return_sequences
        )
    rows = batch * settings.num_return_sequences
    ids, scores, lengths = ids[:rows], scores[:rows], lengths[:rows]
    ids = ids[:, : int(lengths.max())]
    if return_dict_in_generate:
        return GenerateOutput(ids, scores if output_scores else None)
    return (ids, scores) if return_scores else ids
