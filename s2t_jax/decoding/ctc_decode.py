"""Decoding with the CTC head alone, or CTC first and the attention decoder second.

  * `ctc_greedy_generate`: best path of the CTC head, merged and blank-free: no decoder at
    all, the quickest look at a batch.
  * `attention_rescoring`: WeNet's two-pass decoding. A CTC prefix beam search
    (decoding/ctc_beam.py) proposes the N best label sequences of each utterance; the
    attention decoder scores all of them teacher-forced in one batch; the best of
    `ctc_weight * ctc_score + (1 - ctc_weight) * attention_score` wins.
Both return ids shaped as generate() returns them (decoder start token first, eos, pad), so
the same tokenizer decodes them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from s2t_jax.decoding import ctc
from s2t_jax.decoding.ctc_beam import ctc_prefix_beam_search


def _ctc_log_probs(model, features, mask):
    if getattr(model, "ctc_head", None) is None:
        raise ValueError("CTC decoding needs a model with a CTC head (model.ctc_head)")
    enc, enc_mask = model.encode(features, mask)
    head = {k: jnp.asarray(v) for k, v in model.ctc_head.items()}
    log_probs = ctc.ctc_log_probs(enc, head)  # [B, T, V]
    return enc, enc_mask, log_probs, jnp.sum(enc_mask, axis=1).astype(jnp.int32)


def _decode(model, ids, enc, enc_mask):
    """Teacher-forced decoder logits [n, L, V] for ids [n, L] over encoder states."""
    from s2t_jax.models.model import Speech2Text
    from s2t_jax.models.params import as_variables

    fn = getattr(model, "_jit_decode", None)
    if fn is None:
        fn = jax.jit(
            lambda p, i, e, m: model.module.apply(
                as_variables(p), i, e, m, method=Speech2Text.decode
            )
        )
        model._jit_decode = fn
    return fn(model.variables, jnp.asarray(ids), enc, enc_mask)


def _as_generate_ids(rows, config) -> np.ndarray:
    """[[label ids]] -> [batch, longest + 2] int32: start token, labels, eos, pad."""
    width = 2 + max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), config.pad_token_id, np.int32)
    out[:, 0] = config.decoder_start_token_id
    for i, r in enumerate(rows):
        out[i, 1 : 1 + len(r)] = r
        out[i, 1 + len(r)] = config.eos_token_id
    return out


def _labels_only(ids, config) -> list[int]:
    specials = {config.pad_token_id, config.eos_token_id, config.bos_token_id}
    return [t for t in ids if t not in specials]


def ctc_greedy_generate(model, features, attention_mask=None) -> np.ndarray:
    """ids [batch, longest] from the CTC head's best path."""
    config = model.config
    _, _, log_probs, lengths = _ctc_log_probs(model, features, attention_mask)
    ids, count = jax.jit(ctc.ctc_greedy, static_argnames=("blank", "pad"))(
        log_probs, lengths, blank=config.bos_token_id, pad=config.pad_token_id
    )
    ids, count = np.asarray(ids), np.asarray(count)
    rows = [_labels_only(ids[i, : count[i]].tolist(), config) for i in range(len(ids))]
    return _as_generate_ids(rows, config)


def attention_rescoring(
    model, features, attention_mask=None, *, beam_size: int = 10, ctc_weight: float = 0.5
) -> np.ndarray:
    """ids [batch, longest]: the CTC N-best of each utterance, rescored by the decoder."""
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight={ctc_weight} must be in [0, 1]")
    config = model.config
    enc, enc_mask, log_probs, lengths = _ctc_log_probs(model, features, attention_mask)
    log_probs, lengths = np.asarray(log_probs), np.asarray(lengths)
    best = []
    for i in range(len(log_probs)):
        nbest = ctc_prefix_beam_search(
            log_probs[i, : lengths[i]], beam_size, blank=config.bos_token_id
        )
        candidates = [(_labels_only(list(p), config), s) for p, s in nbest] or [([], 0.0)]
        ids = _as_generate_ids([c for c, _ in candidates], config)  # [n, L]
        inputs, targets = ids[:, :-1], ids[:, 1:]
        n = len(candidates)
        enc_i = jnp.repeat(enc[i : i + 1], n, axis=0)
        mask_i = jnp.repeat(enc_mask[i : i + 1], n, axis=0)
        logits = _decode(model, inputs, enc_i, mask_i)  # [n, L - 1, V]
        logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
        token_logp = np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        valid = (
            np.arange(targets.shape[1])[None, :]
            <= np.array([len(c) for c, _ in candidates])[:, None]
        )
        attention = (token_logp * valid).sum(axis=1)  # labels and eos
        ctc_scores = np.array([s for _, s in candidates])
        total = ctc_weight * ctc_scores + (1.0 - ctc_weight) * attention
        best.append(candidates[int(np.argmax(total))][0])
    return _as_generate_ids(best, config)
