"""`generate`: the user call, with transformers' arguments, defaults and output.

It resolves the settings once (`settings.resolve_settings`: kwargs, then the generation config
read when the model was loaded, then transformers' global defaults), pads frames up to a bucket
so the number of compilations stays bounded, splits the rows over the local devices
(placement.py) and, for mixed lengths, into length groups (groups.py), calls the cached
compiled search (search.py) and trims the ids to the longest sequence, which is exactly the
shape transformers returns.

With bucketing, compiles are at most len(buckets) x (distinct batch sizes) x (distinct static
settings); `compilation_cache.enable_compilation_cache(dir)` keeps them on disk across
processes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from s2t_jax.decoding.buckets import DEFAULT_BUCKETS, bucket_for, pad_axis
from s2t_jax.decoding.groups import encode_in_groups, length_groups, search_groups, search_in_groups
from s2t_jax.decoding.placement import generation_mesh, mesh_size, on_mesh, round_up
from s2t_jax.decoding.processors import search_options
from s2t_jax.decoding.search import search_for, select_returned
from s2t_jax.decoding.settings import resolve_settings

_ACCEPTED_NOOPS = {"do_sample": False, "use_cache": True, "output_attentions": False}


@dataclasses.dataclass
class GenerateOutput:
    """transformers' return_dict_in_generate output, the fields we produce."""

    sequences: np.ndarray
    sequences_scores: np.ndarray | None = None

    def __getitem__(self, key):
        return getattr(self, key)


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
    cfg = model.config
    features, mask = checked_inputs(
        input_features, attention_mask, cfg.input_feat_per_channel * cfg.input_channels
    )
    batch, frames = features.shape[:2]
    padded_frames = bucket_for(frames, buckets)
    padded_batch = bucket_for(batch, batch_buckets)
    mesh = generation_mesh(devices, padded_batch)
    padded_batch = round_up(padded_batch, mesh_size(mesh))
    features = pad_axis(pad_axis(features, padded_frames, axis=1), padded_batch, axis=0)
    mask = pad_axis(pad_axis(mask, padded_frames, axis=1), padded_batch, axis=0)

    settings.validate(cfg.vocab_size)
    params = model.params if params is None else params
    lengths_in = mask.sum(1)
    split = search_groups(lengths_in, padded_frames, buckets, cfg) if group_by_length else None
    groups = None
    if group_by_length and split is None:
        groups = length_groups(lengths_in, padded_frames, buckets, cfg)
    if split is not None:
        ids, scores, lengths = search_in_groups(cfg, params, features, mask, split, settings, mesh)
    else:
        if groups is None:
            run = search_for(cfg, settings.static(), mesh=mesh)
            out = run(*on_mesh(mesh, params, features, mask), search_options(settings))
        else:
            enc, enc_mask = encode_in_groups(cfg, params, features, mask, groups, mesh)
            run = search_for(cfg, settings.static(), encoded=True, mesh=mesh)
            out = run(*on_mesh(mesh, params, enc, enc_mask), search_options(settings))
        out = [np.asarray(x) for x in out]  # one transfer at the end of the search
        ids, scores, lengths = select_returned(
            *out, settings.num_beams, settings.num_return_sequences
        )
    rows = batch * settings.num_return_sequences
    ids, scores, lengths = ids[:rows], scores[:rows], lengths[:rows]
    ids = ids[:, : int(lengths.max())]
    if return_dict_in_generate:
        return GenerateOutput(ids, scores if output_scores else None)
    return (ids, scores) if return_scores else ids
