"""`generate`: the user call, with transformers' arguments, defaults and output.

It resolves the settings once (`settings.resolve_settings`: kwargs, then the generation config
read when the model was loaded, then transformers' global defaults), pads frames up to a bucket
so the number of compilations stays bounded (invisibly: the convs see zeros past the frames
the user gave, as transformers' do), splits the rows over the local devices
(placement.py) and, for mixed lengths, into length groups (groups.py), calls the cached
compiled search (search.py) and trims the ids to the longest sequence, which is exactly the
shape transformers returns.

With bucketing, compiles are at most len(buckets) x (distinct batch sizes) x (distinct static
settings); `compilation_cache.enable_compilation_cache(dir)` keeps them on disk across
processes.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from s2t_jax.decoding.buckets import DEFAULT_BUCKETS, bucket_for, pad_axis
from s2t_jax.decoding.groups import encode_in_groups, length_groups, search_groups, search_in_groups
from s2t_jax.decoding.placement import generation_mesh, mesh_size, on_mesh, round_up
from s2t_jax.decoding.processors import row_keys, search_options
from s2t_jax.decoding.search import search_for, select_returned
from s2t_jax.decoding.settings import resolve_settings

# transformers' generate arguments we accept only at their no-op value -> why no other value
# works. Any other keyword is refused too (TypeError naming it): nothing is silently ignored.
_ACCEPTED_NOOPS = {
    "use_cache": (True, "the search always uses its KV cache"),
    "output_attentions": (False, "attention weights are not collected by the jitted search"),
    "output_hidden_states": (False, "hidden states are not collected by the jitted search"),
    "num_beam_groups": (
        1,
        "group (diverse) beam search left transformers 5 itself (a Hub custom_generate repo)",
    ),
    "diversity_penalty": (0.0, "it belongs to group beam search (num_beam_groups)"),
    "logits_processor": (None, "torch logits processors cannot run in the jitted search"),
    "stopping_criteria": (None, "torch stopping criteria cannot run in the jitted search"),
    "prefix_allowed_tokens_fn": (None, "a Python callback cannot run in the jitted search"),
    "synced_gpus": (False, "rows are split over devices by devices="),
    "assistant_model": (None, "assisted generation is not implemented"),
    "streamer": (None, "nothing leaves the jitted search before it ends"),
    "generation_config": (None, "pass its values as keyword arguments"),
    "forced_eos_token_id": (None, "not implemented"),
    "encoder_repetition_penalty": (1.0, "not implemented"),
    "encoder_no_repeat_ngram_size": (0, "not implemented"),
    "exponential_decay_length_penalty": (None, "not implemented"),
    "sequence_bias": (None, "not implemented (bad_words_ids is)"),
    "renormalize_logits": (False, "not implemented"),
    "remove_invalid_values": (False, "not implemented"),
    "typical_p": (1.0, "not implemented (temperature, top_k and top_p are)"),
    "epsilon_cutoff": (0.0, "not implemented (temperature, top_k and top_p are)"),
    "eta_cutoff": (0.0, "not implemented (temperature, top_k and top_p are)"),
    "min_p": (None, "not implemented (temperature, top_k and top_p are)"),
    "top_h": (None, "not implemented (temperature, top_k and top_p are)"),
    "penalty_alpha": (None, "contrastive search is not implemented"),
    "guidance_scale": (None, "classifier-free guidance is not implemented"),
    "max_time": (None, "the jitted search cannot watch the clock"),
    "stop_strings": (None, "not implemented"),
    "watermarking_config": (None, "not implemented"),
    "low_memory": (None, "not implemented"),
    "cache_implementation": (None, "the search has its own cache layout"),
    "return_legacy_cache": (None, "no cache is returned"),
}
# Settings that only apply when sampling: given without do_sample, transformers ignores them
# with a warning, and so do we.
_SAMPLING_ONLY = {"temperature": 1.0, "top_k": 50, "top_p": 1.0}


def _is_noop(value, noop) -> bool:
    """Whether `value` leaves generation as `noop` does; None is transformers' "unset"."""
    if value is None:
        return True
    if noop is None:
        return value is noop or (noop is None and isinstance(value, (list, tuple)) and not value)
    try:
        return bool(value == noop)
    except (TypeError, ValueError):
        return False


def refuse_unsupported(arguments: dict) -> None:
    """TypeError naming the first argument generate() cannot honour (see _ACCEPTED_NOOPS)."""
    for key, value in arguments.items():
        if key not in _ACCEPTED_NOOPS:
            raise TypeError(f"generate() got an unexpected or unsupported argument {key}={value!r}")
        noop, why = _ACCEPTED_NOOPS[key]
        if not _is_noop(value, noop):
            raise TypeError(f"generate() does not support {key}={value!r} (only {noop!r}): {why}")


@dataclasses.dataclass
class GenerateOutput:
    """transformers' return_dict_in_generate output (GenerateEncoderDecoderOutput, or
    GenerateBeamEncoderDecoderOutput for beam search), as numpy arrays: sequences
    [rows, length]; sequences_scores [rows] (beam search with output_scores); scores and
    logits, tuples of one [batch * num_beams, vocab] array per step (output_scores,
    output_logits); beam_indices [rows, generated] (beam search, -1 past the end)."""

    sequences: np.ndarray
    sequences_scores: np.ndarray | None = None
    scores: tuple | None = None
    logits: tuple | None = None
    beam_indices: np.ndarray | None = None

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


def checked_inputs(input_features, attention_mask, feature_size: int):
    """(features float32 [batch, frames, feature_size], mask int32 [batch, frames]) of a call,
    or a ValueError naming the argument and the row: an empty batch, no frames, a row with no
    valid frame, or NaN / Inf values would otherwise decode to ids as if nothing were wrong.
    One pass over the features on the host, outside the jitted search."""
    try:
        features = np.asarray(input_features, np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"input_features must be a numeric array, not {type(input_features).__name__} ({e})"
        ) from e
    if features.ndim == 2:
        features = features[None]
    if features.ndim != 3 or features.shape[-1] != feature_size:
        raise ValueError(
            f"input_features must be [batch, frames, {feature_size}], got shape {features.shape}"
        )
    batch, frames = features.shape[:2]
    if batch == 0 or frames == 0:
        raise ValueError(
            f"input_features has no {'utterance' if batch == 0 else 'frame'} (shape {features.shape})"
        )
    finite = np.isfinite(features).all(axis=(1, 2))  # [batch]
    if not finite.all():
        raise ValueError(f"input_features row {int(np.argmin(finite))} holds NaN or Inf values")
    if attention_mask is None:
        return features, np.ones((batch, frames), np.int32)
    try:
        mask = np.asarray(attention_mask, np.int32).reshape(batch, -1)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"attention_mask must be a [batch={batch}, frames={frames}] array of 0/1 ({e})"
        ) from e
    if mask.shape[1] != frames:
        raise ValueError(f"attention_mask has {mask.shape[1]} frames, features {frames}")
    empty = mask.sum(1) <= 0  # [batch]
    if empty.any():
        raise ValueError(f"attention_mask row {int(np.argmax(empty))} has no valid frame")
    return features, mask


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
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    bad_words_ids=None,
    suppress_tokens=None,
    begin_suppress_tokens=None,
    prng_key=None,
    ctc_weight: float | None = None,
    ctc_pre_beam: int | None = None,
    lm=None,
    lm_weight: float | None = None,
    length_bonus: float | None = None,
    maxlenratio: float | None = None,
    minlenratio: float | None = None,
    return_scores: bool = False,
    return_dict_in_generate: bool = False,
    output_scores: bool = False,
    output_logits: bool = False,
    buckets=DEFAULT_BUCKETS,
    batch_buckets=None,
    group_by_length: bool = True,
    devices=None,
    params=None,
    **unsupported,
):
    """Greedy search, sampling or beam search (sampling), returning ids shaped as transformers
    returns them.

    input_features [batch, frames, feat]; attention_mask [batch, frames] (1 = real frame),
    None meaning all frames are real. Frames are padded up to `buckets` (None: no padding) and,
    if `batch_buckets` is set, the batch up to one of those sizes, so repeated calls reuse a few
    compiled functions. That padding is invisible: the convs see zeros past the frames given,
    as transformers' convs do, so the result is transformers' on the batch as passed.

    With buckets and `group_by_length` (the default), a batch of mixed lengths is encoded in
    groups of similar length, each padded only to its own bucket (see `length_groups`), and
    the search runs on the reassembled encoder states: the same states on every valid frame,
    without the encoder work on another utterance's padding.

    With several local devices (GPUs, TPU cores, or CPU cores made devices by
    host_devices.use_cpu_cores), the rows are split over them and each device runs its own
    search on its rows (`devices`: None for all local devices, a count, or a list; 1 for
    one). The batch is padded to a multiple of the device count; the ids do not change.

    Sampling (do_sample=True, with temperature, top_k, top_p as transformers') draws inside
    the jitted loop from `prng_key` (a JAX key or an int seed; None: a fresh seed each call,
    like transformers' global torch RNG); row i of the batch (after num_return_sequences
    repeats it) draws with fold_in(prng_key, i), so a fixed key reproduces the result
    whatever the buckets, length groups or devices.

    Joint CTC/attention decoding and LM shallow fusion (ours; decoding/fusion.py):
    `ctc_weight` in [0, 1] weighs the CTC head's prefix scores against the decoder's (the
    model needs a CTC head: model.ctc_head), over the `ctc_pre_beam` best candidates per
    hypothesis; `lm` (a language model directory or .pt, or (LMConfig, params) from
    checkpoints.lm.load_lm) is added with `lm_weight`; `length_bonus` is added per token.
    These run on one device, without length groups.

    Length limits from the input, as ESPnet's beam search sets them (ours; runtime values, so
    a new ratio does not recompile): each row's cap comes from its own valid encoder frames
    T (after the subsampler). `maxlenratio` 0 allows T labels, r > 0 allows max(1, int(r *
    T)); a hypothesis that reaches its row's cap is ended with eos, as ESPnet appends eos at
    maxlen. max_length still bounds every row. `minlenratio` r bans eos until a hypothesis
    holds int(r * T) labels (with min_length also applying). None (the default): no such
    limit, the search is exactly transformers'.

    Returns ids [batch * num_return_sequences, longest] (numpy int32, decoder start token
    first, pad after eos); with return_scores=True, (ids, scores); with
    return_dict_in_generate=True, a GenerateOutput with transformers' fields (sequences,
    sequences_scores, scores, logits, beam_indices, in transformers' shapes). Per-step scores
    and logits are recorded on one device, in one search over the whole batch.
    """
    refuse_unsupported(unsupported)
    sampling_args = dict(temperature=temperature, top_k=top_k, top_p=top_p)
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
        do_sample=do_sample,
        repetition_penalty=repetition_penalty,
        bad_words_ids=bad_words_ids,
        suppress_tokens=suppress_tokens,
        begin_suppress_tokens=begin_suppress_tokens,
        **sampling_args,
    )
    if not settings.do_sample:
        ignored = {
            k: v for k, v in sampling_args.items() if v is not None and v != _SAMPLING_ONLY[k]
        }
        if ignored or prng_key is not None:
            warnings.warn(
                f"do_sample is False: {sorted(ignored) + (['prng_key'] if prng_key is not None else [])}"
                " only apply when sampling and are ignored (as transformers ignores them)",
                UserWarning,
                stacklevel=2,
            )
    cfg = model.config
    fusion = None
    if ctc_weight or lm is not None or lm_weight or length_bonus:
        settings, fusion = _fusion(
            model, settings, params, ctc_weight, ctc_pre_beam, lm, lm_weight, length_bonus
        )
    if maxlenratio is not None or minlenratio is not None:
        settings = dataclasses.replace(settings, maxlenratio=maxlenratio, minlenratio=minlenratio)
    settings.validate(cfg.vocab_size)
    features, mask = checked_inputs(
        input_features, attention_mask, cfg.input_feat_per_channel * cfg.input_channels
    )
    batch, frames = features.shape[:2]
    returned = settings.num_return_sequences
    if settings.do_sample and settings.num_beams == 1 and returned > 1:
        # transformers repeats each row num_return_sequences times and samples each copy.
        features, mask = np.repeat(features, returned, 0), np.repeat(mask, returned, 0)
        settings = dataclasses.replace(settings, num_return_sequences=1)
    rows = features.shape[0]
    outputs = ()
    if return_dict_in_generate:
        outputs = tuple(
            name
            for name, wanted in (
                ("scores", output_scores),
                ("logits", output_logits),
                ("beam_indices", settings.num_beams > 1),
            )
            if wanted
        )
    padded_frames = bucket_for(frames, buckets)
    padded_batch = bucket_for(rows, batch_buckets)
    # Recorded steps must be those of one search over the batch, as transformers runs it.
    mesh = None if (outputs or fusion) else generation_mesh(devices, padded_batch)
    padded_batch = round_up(padded_batch, mesh_size(mesh))
    features = pad_axis(pad_axis(features, padded_frames, axis=1), padded_batch, axis=0)
    mask = pad_axis(pad_axis(mask, padded_frames, axis=1), padded_batch, axis=0)

    rng = None
    if settings.do_sample:
        if prng_key is None:
            prng_key = int(np.random.SeedSequence().generate_state(1)[0])
        rng = np.asarray(row_keys(prng_key, padded_batch))
    options = search_options(settings, conv_frames=frames, rng=rng)
    static = settings.static(outputs)
    params = model.variables if params is None else params
    if fusion is not None:
        params, group_by_length = fusion, False
    lengths_in = mask.sum(1)
    split = None
    if group_by_length and not outputs:
        split = search_groups(lengths_in, padded_frames, buckets, cfg)
    groups = None
    if group_by_length and split is None:
        groups = length_groups(lengths_in, padded_frames, buckets, cfg)
    extras = {}
    if split is not None:
        ids, scores, lengths = search_in_groups(
            cfg, params, features, mask, split, settings, options, mesh
        )
    else:
        if groups is None:
            run = search_for(cfg, static, mesh=mesh)
            out = run(*on_mesh(mesh, params, features, mask), options)
        else:
            enc, enc_mask = encode_in_groups(cfg, params, features, mask, groups, frames, mesh)
            run = search_for(cfg, static, encoded=True, mesh=mesh)
            out = run(*on_mesh(mesh, params, enc, enc_mask), options)
        out = [np.asarray(x) for x in out[:3]] + [out[3]]  # one transfer at the end
        ids, scores, lengths, extras = select_returned(
            *out[:3], settings.num_beams, settings.num_return_sequences, out[3]
        )
    n_out = rows * settings.num_return_sequences
    ids, scores, lengths = ids[:n_out], scores[:n_out], lengths[:n_out]
    ids = ids[:, : int(lengths.max())]
    if return_dict_in_generate:
        return _dict_output(ids, scores, extras, settings, rows, output_scores)
    return (ids, scores) if return_scores else ids


def _fusion(model, settings, params, ctc_weight, ctc_pre_beam, lm, lm_weight, length_bonus):
    """The settings and FusionParams of joint CTC/attention decoding and LM fusion."""
    from s2t_jax.decoding.fusion import FusionParams

    head = None
    if ctc_weight:
        head = getattr(model, "ctc_head", None)
        if head is None:
            raise ValueError(
                f"ctc_weight={ctc_weight} needs a CTC head, and this model has none (train "
                "with ctc_weight > 0 and save in our format, or load a fairseq .pt with "
                "encoder.ctc_proj)"
            )
    lm_config = lm_params = None
    if lm is not None:
        if isinstance(lm, (str, bytes)) or hasattr(lm, "__fspath__"):
            from s2t_jax.checkpoints.lm import load_lm

            lm = load_lm(str(lm))
        try:
            lm_config, lm_params = lm
        except (TypeError, ValueError) as e:
            raise ValueError(
                "lm must be a language model path or (LMConfig, params) from "
                f"s2t_jax.checkpoints.lm.load_lm, got {type(lm).__name__}"
            ) from e
    if lm_weight and lm is None:
        raise ValueError(f"lm_weight={lm_weight} needs a language model (lm=)")
    if lm is not None and not lm_weight:
        raise ValueError("lm= needs lm_weight= (the LM's weight in shallow fusion, e.g. 0.3)")
    settings = dataclasses.replace(
        settings,
        ctc_weight=float(ctc_weight or 0.0),
        ctc_pre_beam=int(ctc_pre_beam or 0),
        lm_weight=float(lm_weight or 0.0),
        length_bonus=float(length_bonus or 0.0),
        lm_config=lm_config,
    )
    model_params = model.variables if params is None else params
    return settings, FusionParams(model_params, head, lm_params)


def _dict_output(ids, scores, extras, settings, rows, output_scores) -> GenerateOutput:
    """transformers' output fields from the search's recorded buffers: per-step arrays for the
    steps the loop ran, over every beam of the real rows."""
    beams = settings.num_beams
    steps = int(extras.get("steps", 0))
    per_step = {}
    for name in ("scores", "logits"):
        if name in extras:
            buffer = np.asarray(extras[name])  # [max_length - 1, padded rows * beams, vocab]
            per_step[name] = tuple(buffer[i, : rows * beams] for i in range(steps))
    beam_indices = None
    if beams > 1:
        beam_indices = np.asarray(extras["beam_indices"])[: ids.shape[0]]
        beam_indices = beam_indices[:, : ids.shape[1] - 1]
    return GenerateOutput(
        sequences=ids,
        sequences_scores=scores if (output_scores and beams > 1) else None,
        scores=per_step.get("scores"),
        logits=per_step.get("logits"),
        beam_indices=beam_indices,
    )
