"""Scorers beside the attention decoder, inside the jitted search: CTC prefix scores (joint
CTC/attention decoding) and a language model (shallow fusion).

Each search step then scores a candidate token c of hypothesis h as

    (1 - ctc_weight) * log p_att(c | h) + ctc_weight * (psi(h + c) - psi(h))
        + lm_weight * log p_lm(c | h) + length_bonus * [c != eos]

where psi is the CTC prefix score (decoding/ctc.py) and, for c = eos, psi(h + eos) is the
probability that the whole utterance is exactly h. As in ESPnet, the CTC term is computed only
for the `ctc_pre_beam` best candidates of each hypothesis (by attention + LM score); the rest of
the vocabulary is out of the running for that step. With ctc_weight = 0 and no LM the search is
the plain one (whose ids equal transformers').

The scorers' state rides in the search's cache, so greedy and beam search need no new state:
  dec                       the decoder's cache
  lm                        the LM's self-attention K/V (kv_cache layout) and `lm_logp`, the
                            LM's next-token log-probs after the last token
  ctc_r, ctc_psi            each hypothesis' CTC state [N, T, 2] and prefix score [N]
  ctc_next_r, ctc_next_psi, ctc_cand
                            the states of the K candidates scored at the last step; the next
                            step keeps the one whose token the search chose
All leaves hold one row per hypothesis (batch * beams), so beam search's reorder is a gather.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from s2t_jax.decoding import ctc
from s2t_jax.models.kv_cache import grow_self_cache, reorder_self_cache

NEG = -1.0e9  # out of the running (transformers' large negative)


class FusionParams(NamedTuple):
    """What the search needs beside the speech model's params."""

    model: dict
    ctc: dict | None = None  # the CTC head {"kernel", "bias"}
    lm: dict | None = None  # the LM's params


def wrap_search(
    step_fn,
    dec_cache,
    *,
    enc,
    enc_mask,
    beams: int,
    max_length: int,
    eos_token_id: int,
    blank: int,
    fusion: FusionParams,
    lm_module=None,
    ctc_weight: float = 0.0,
    lm_weight: float = 0.0,
    length_bonus: float = 0.0,
    pre_beam: int = 0,
    forced_bos=None,
):
    """-> (step_fn, cache, rescore, reorder_cache, grow_cache) for greedy_search / beam_search.

    step_fn runs the decoder (and the LM) and picks up the CTC state of the token the search
    chose; rescore(log_probs [N, V], cache, t) -> (scores [N, V], cache) combines the scores.

    forced_bos: None, or the forced first token per hypothesis ([N] or a scalar, -1 = none),
    a multilingual model's `<lang:xx>` tag. As in ESPnet, a forced tag is not a CTC label (the
    CTC head is trained without it): the step that forces it keeps the processed scores as
    they are, and CTC scoring starts after it from the empty prefix.
    """
    rows = enc.shape[0] * beams
    if forced_bos is None:
        forced = jnp.zeros((rows,), bool)
    else:
        forced = jnp.broadcast_to(jnp.asarray(forced_bos) >= 0, (rows,))  # [N]
    cache = {"dec": dec_cache}
    use_ctc = fusion.ctc is not None and ctc_weight > 0
    use_lm = lm_module is not None and fusion.lm is not None
    if use_lm:
        cache["lm"] = lm_module.init_cache(rows, dec_cache["self_k"][0].shape[2])
        cache["lm_logp"] = jnp.zeros((rows, lm_module.config.vocab_size), jnp.float32)
    if use_ctc:
        log_probs = ctc.ctc_log_probs(enc, fusion.ctc)  # [B, T, V]
        lengths = jnp.sum(enc_mask, axis=1).astype(jnp.int32)  # [B]
        lengths = jnp.repeat(lengths, beams)  # [N]
        lp_vt = jnp.swapaxes(log_probs, 1, 2)  # [B, V, T]
        row_of = jnp.arange(rows) // beams  # [N] batch row of each hypothesis
        r0, _ = ctc.prefix_score_init(log_probs, lengths)  # [T, 2, B]
        r0 = jnp.repeat(jnp.moveaxis(r0, 2, 0), beams, axis=0)  # [N, T, 2]
        frames, k = log_probs.shape[1], pre_beam
        cache.update(
            ctc_r=r0,
            ctc_psi=jnp.zeros((rows,), jnp.float32),
            ctc_next_r=jnp.zeros((rows, k, frames, 2), jnp.float32),
            ctc_next_psi=jnp.zeros((rows, k), jnp.float32),
            ctc_cand=jnp.full((rows, k), -1, jnp.int32),
            ctc_last=jnp.zeros((rows,), jnp.int32),
            ctc_init=r0,
        )

    def fused_step(tokens, index, cache):
        logits, dec = step_fn(tokens, index, cache["dec"])
        new = dict(cache, dec=dec)
        if use_lm:
            lm_logits, lm_cache = lm_module.apply(
                {"params": fusion.lm},
                tokens,
                index,
                cache["lm"],
                max_length,
                method=type(lm_module).step,
            )
            new["lm"] = lm_cache
            new["lm_logp"] = jax.nn.log_softmax(lm_logits, axis=-1)
        if use_ctc:
            hit = cache["ctc_cand"] == tokens[:, None]  # [N, K]
            k = jnp.argmax(hit, axis=1)  # [N]
            found = jnp.any(hit, axis=1) & (index > 0)
            picked_r = jnp.take_along_axis(cache["ctc_next_r"], k[:, None, None, None], 1)[:, 0]
            picked_psi = jnp.take_along_axis(cache["ctc_next_psi"], k[:, None], 1)[:, 0]
            # Before any label: the start token, and a forced tag after it.
            first = (index == 0) | (forced & (index == 1))  # [N]
            new["ctc_r"] = jnp.where(
                first[:, None, None],
                cache["ctc_init"],
                jnp.where(found[:, None, None], picked_r, ctc.NEG_INF),
            )
            new["ctc_psi"] = jnp.where(first, 0.0, jnp.where(found, picked_psi, ctc.NEG_INF))
            new["ctc_last"] = tokens
        return logits, new

    def rescore(log_probs, cache, t):
        scores = log_probs
        if use_lm:
            scores = scores + lm_weight * cache["lm_logp"]
        if length_bonus:
            not_eos = jnp.arange(scores.shape[-1]) != eos_token_id
            scores = scores + length_bonus * not_eos[None, :]
        if not use_ctc:
            return scores, cache
        _, cand = jax.lax.top_k(scores, pre_beam)  # [N, K] by attention (+ LM)
        cand = cand.astype(jnp.int32)
        x, x_blank = ctc.candidate_log_probs(lp_vt, row_of, cand, blank)
        r_prev = jnp.moveaxis(cache["ctc_r"], 0, 2)  # [T, 2, N]
        is_empty = (t == 1) | (forced & (t == 2))  # [N]: no CTC label yet
        psi, r_next = ctc.prefix_score_step(
            x, x_blank, lengths, r_prev, cache["ctc_last"], cand, is_empty
        )
        final = ctc.prefix_final(r_prev, lengths)  # [N]: ending here
        psi = jnp.where(cand == eos_token_id, final[:, None], psi)
        delta = psi - cache["ctc_psi"][:, None]  # [N, K]
        att = jnp.take_along_axis(log_probs, cand, axis=1)
        rest = jnp.take_along_axis(scores, cand, axis=1) - att  # LM and length bonus
        joint = (1.0 - ctc_weight) * att + ctc_weight * delta + rest
        # The blank is no label, and an impossible CTC prefix is out of the running.
        joint = jnp.where(cand == blank, NEG, jnp.maximum(joint, NEG))
        out = jnp.full_like(scores, NEG)
        out = out.at[jnp.arange(rows)[:, None], cand].set(joint)
        out = jnp.where((forced & (t == 1))[:, None], scores, out)  # the tag's step
        cache = dict(
            cache,
            ctc_next_r=jnp.moveaxis(r_next, (2, 3), (0, 1)),  # [N, K, T, 2]
            ctc_next_psi=psi,
            ctc_cand=cand,
        )
        return out, cache

    def reorder(cache, rows_index):
        take = lambda x: x.at[rows_index].get(mode="promise_in_bounds")  # noqa: E731
        out = {k: (take(v) if k not in ("dec", "lm", "ctc_init") else v) for k, v in cache.items()}
        out["dec"] = reorder_self_cache(cache["dec"], rows_index)
        if "lm" in cache:
            out["lm"] = reorder_self_cache(cache["lm"], rows_index)
        return out

    def grow(cache, length):
        out = dict(cache, dec=grow_self_cache(cache["dec"], length))
        if "lm" in cache:
            out["lm"] = grow_self_cache(cache["lm"], length)
        return out

    return fused_step, cache, rescore, reorder, grow
