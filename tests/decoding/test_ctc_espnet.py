"""Our CTC prefix scorer against ESPnet's own, on ESPnet's recorded outputs.

tests/assets/espnet/ctc_prefix_scores.npz was written by tools/make_espnet_ctc_fixture.py with
ESPnet 202511 (PyTorch 2.13 CPU; see the README there): psi(prefix + c) for every token c of a
7-token vocabulary, 8 prefixes, a padded batch of 2 rows (8 and 5 valid frames), from ESPnet's
`CTCPrefixScore` (numpy, per utterance), `CTCPrefixScoreTH` (batched, BatchBeamSearch's) and
`CTCPrefixScoreTH` with a pre-beam of 4 candidates. Here `s2t_jax.decoding.ctc` steps through
the same prefixes on the same padded batch (its padded frames hold random values, which must
be masked by the lengths, as ESPnet's batched scorer masks them).

Tolerance: 1e-5 absolute on float32 log-probabilities of magnitude <= 25 (both sides sum the
same terms in float32 in different orders). ESPnet writes log(0) as -1e10 and we as about
-1e30: an impossible extension must be below -1e9 on both sides.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2t_jax.decoding import ctc

FIXTURE = Path(__file__).resolve().parents[1] / "assets" / "espnet" / "ctc_prefix_scores.npz"
TOL = 1e-5
IMPOSSIBLE = -1e9


@pytest.fixture(scope="module")
def fixture():
    return dict(np.load(FIXTURE))


def our_scores(fx) -> np.ndarray:
    """psi [batch, prefixes, vocab] from s2t_jax.decoding.ctc: the prefix score of every
    candidate after each prefix, eos as the prefix's final score, blank as log(0)."""
    log_probs = jnp.asarray(fx["log_probs"])  # [B, T, V]
    lengths = jnp.asarray(fx["lengths"])  # [B]
    blank, eos = int(fx["blank"]), int(fx["eos"])
    batch, _, vocab = log_probs.shape
    lp_vt = jnp.swapaxes(log_probs, 1, 2)  # [B, V, T]
    rows = jnp.arange(batch)
    out = np.zeros((batch, len(fx["prefixes"]), vocab), np.float32)
    every = jnp.broadcast_to(jnp.arange(vocab, dtype=jnp.int32), (batch, vocab))  # [B, V]
    step_fn = jax.jit(ctc.prefix_score_step)  # two compiles: 1 and V candidates
    for p, (prefix, n) in enumerate(zip(fx["prefixes"], fx["prefix_lengths"])):
        r, _ = ctc.prefix_score_init(log_probs, lengths, blank)  # [T, 2, B]
        last = jnp.zeros(batch, jnp.int32)
        for step, token in enumerate(prefix[:n]):
            cand = jnp.full((batch, 1), int(token), jnp.int32)  # [B, 1]
            x, x_blank = ctc.candidate_log_probs(lp_vt, rows, cand, blank)
            empty = jnp.full((batch,), step == 0)
            _, r_next = step_fn(x, x_blank, lengths, r, last, cand, empty)
            r, last = r_next[..., 0], cand[:, 0]  # [T, 2, B]
        x, x_blank = ctc.candidate_log_probs(lp_vt, rows, every, blank)
        empty = jnp.full((batch,), n == 0)
        psi, _ = step_fn(x, x_blank, lengths, r, last, every, empty)  # [B, V]
        psi = np.array(psi)
        psi[:, eos] = np.asarray(ctc.prefix_final(r, lengths))
        psi[:, blank] = ctc.NEG_INF
        out[:, p] = psi
    return out


def assert_matches(ours, espnet, considered=None):
    considered = np.ones(espnet.shape, bool) if considered is None else considered
    possible = considered & (espnet > IMPOSSIBLE)
    impossible = considered & ~possible
    assert possible.sum() > 60 and impossible.sum() > 20  # both kinds are exercised
    np.testing.assert_allclose(ours[possible], espnet[possible], rtol=0, atol=TOL)
    assert (ours[impossible] < IMPOSSIBLE).all()


@pytest.fixture(scope="module")
def ours(fixture):
    return our_scores(fixture)


def test_prefix_scores_match_espnet_per_utterance_scorer(fixture, ours):
    assert_matches(ours, fixture["psi_numpy"])


def test_prefix_scores_match_espnet_batched_scorer_on_a_padded_batch(fixture, ours):
    assert_matches(ours, fixture["psi_batched"])
    # With a pre-beam ESPnet scores only the candidates (the rest stay at its log(0)).
    scored = np.zeros_like(ours, bool)
    for p, ids in enumerate(fixture["scoring_ids"]):  # [B, K]
        for b, row in enumerate(ids):
            scored[b, p, row] = True
    partial = fixture["psi_partial"]
    np.testing.assert_array_equal(partial[~scored] <= IMPOSSIBLE, True)
    np.testing.assert_allclose(
        ours[scored & (partial > IMPOSSIBLE)], partial[scored & (partial > IMPOSSIBLE)], atol=TOL
    )


JOINT = FIXTURE.parent / "joint_beam_search.npz"


def test_joint_ctc_attention_beam_search_finds_espnets_best_hypothesis():
    """ESPnet's BeamSearch (CTCPrefixScorer + a bigram "decoder", pre-beam 1.5 x beam on the
    weighted decoder score, maxlenratio 0) on two utterances of 10 and 7 frames; ours: the
    fused beam search (decoding/fusion.py) on the padded batch, with the bigram as the decoder
    step, the given log-probs as the CTC head's (an identity head) and maxlenratio 0's caps.
    Same best labels and the same joint score (length_penalty 0: ESPnet does not normalise)."""
    from s2t_jax.decoding.beam_search import beam_search
    from s2t_jax.decoding.fusion import FusionParams, wrap_search

    fx = dict(np.load(JOINT))
    ctc_lp = jnp.asarray(fx["ctc_log_probs"])  # [B, T, V]
    lengths = jnp.asarray(fx["lengths"])  # [B]
    bigram = jnp.asarray(fx["bigram"])  # [V, V]: log p(next | last)
    batch, frames, vocab = ctc_lp.shape
    beams, eos, blank = int(fx["beam"]), int(fx["eos"]), int(fx["blank"])
    max_length = frames + 2  # start, at most T labels, eos
    head = {"kernel": jnp.eye(vocab), "bias": jnp.zeros(vocab)}
    enc_mask = (jnp.arange(frames)[None, :] < lengths[:, None]).astype(jnp.int32)  # [B, T]

    def step(tokens, index, cache):  # tokens [N] -> bigram logits [N, V]
        return bigram[tokens], cache

    def reorder(cache, rows):  # every leaf is per hypothesis except the initial CTC state
        return {k: (v if k == "ctc_init" else v[rows]) for k, v in cache.items()}

    for w, weight in enumerate(fx["weights"]):
        fused, cache, rescore, _, _ = wrap_search(
            step,
            jnp.zeros((batch * beams,)),
            enc=ctc_lp,
            enc_mask=enc_mask,
            beams=beams,
            max_length=max_length,
            eos_token_id=eos,
            blank=blank,
            fusion=FusionParams(None, head, None),
            ctc_weight=float(weight),
            pre_beam=int(1.5 * beams),
        )
        ids, scores, _ = beam_search(
            fused,
            cache,
            batch,
            num_beams=beams,
            max_length=max_length,
            decoder_start_token_id=eos,
            eos_token_id=eos,
            pad_token_id=None,
            length_penalty=0.0,
            reorder_cache=reorder,
            rescore=rescore,
            row_cap=lengths + 2,  # maxlenratio 0: T labels, then eos
        )
        ids, scores = np.asarray(ids), np.asarray(scores)  # [B, max_length], [B]: the best
        for b in range(batch):
            expected = [t for t in fx["best_labels"][w, b] if t >= 0]
            got = [int(t) for t in ids[b, 1:]]
            got = got[: got.index(eos)]
            assert got == expected, (weight, b)
            np.testing.assert_allclose(scores[b], fx["best_scores"][w, b], atol=1e-5)
