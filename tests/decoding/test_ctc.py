"""CTC greedy output, prefix scores and forced alignment against brute force over every path.

On 3 symbols (blank 0, a = 1, b = 2) and up to 5 frames there are at most 3^5 = 243 frame
paths, so the exact answers are sums (or maxima) over all of them: the probability that the
collapsed output starts with a prefix, is exactly a sequence, or the best path to a sequence.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from s2t_jax.decoding import ctc

BLANK = 0


def _collapse(path):
    out, prev = [], None
    for s in path:
        if s != prev and s != BLANK:
            out.append(s)
        prev = s
    return tuple(out)


def _paths(log_probs, length):
    """(collapsed output, log-probability, path) of every path over the first `length` frames."""
    for path in itertools.product(range(log_probs.shape[-1]), repeat=length):
        yield _collapse(path), sum(log_probs[t, s] for t, s in enumerate(path)), path


def _prefix_prob(log_probs, length, prefix):
    total = sum(
        np.exp(lp) for out, lp, _ in _paths(log_probs, length) if out[: len(prefix)] == prefix
    )
    return np.log(total) if total > 0 else -np.inf


def _random_log_probs(seed, batch, frames, vocab=3):
    x = np.random.default_rng(seed).normal(size=(batch, frames, vocab)) * 1.5
    return np.asarray(jax.nn.log_softmax(jnp.asarray(x, jnp.float32), axis=-1))


def _extend(log_probs, lengths, state, last, is_empty, candidates):
    """One prefix_score_step; hypothesis n is row n of `log_probs`."""
    r, _ = state
    lp_vt = jnp.swapaxes(jnp.asarray(log_probs), 1, 2)  # [B, V, T]
    rows = jnp.arange(log_probs.shape[0])
    candidates = jnp.asarray(candidates)
    x, x_blank = ctc.candidate_log_probs(lp_vt, rows, candidates)
    psi, r_new = ctc.prefix_score_step(
        x, x_blank, jnp.asarray(lengths), r, jnp.asarray(last), candidates, jnp.asarray(is_empty)
    )
    return np.asarray(psi), r_new


def test_toy_prefix_probabilities_by_hand():
    """One row, 4 frames, a known answer worked out by hand for the first step: the prefix
    "a" is emitted unless every frame is blank or b, and the first non-blank label is not a."""
    p = np.array(
        [[0.5, 0.3, 0.2], [0.6, 0.1, 0.3], [0.2, 0.7, 0.1], [0.4, 0.4, 0.2]], np.float64
    )  # [T, V]
    # P(first emitted label is a) = sum_t P(frames < t blank) * P(frame t = a)
    by_hand_a = 0.3 + 0.5 * 0.1 + 0.5 * 0.6 * 0.7 + 0.5 * 0.6 * 0.2 * 0.4
    by_hand_b = 0.2 + 0.5 * 0.3 + 0.5 * 0.6 * 0.1 + 0.5 * 0.6 * 0.2 * 0.2
    log_probs = np.log(p)[None].astype(np.float32)  # [1, T, V]
    lengths = np.array([4], np.int32)
    state = ctc.prefix_score_init(jnp.asarray(log_probs), jnp.asarray(lengths))
    psi, _ = _extend(log_probs, lengths, state, [0], [True], [[1, 2]])
    np.testing.assert_allclose(np.exp(psi[0]), [by_hand_a, by_hand_b], rtol=1e-6)
    assert by_hand_a == pytest.approx(np.exp(_prefix_prob(np.log(p), 4, (1,))))


@pytest.mark.parametrize("length", [5, 3])
def test_prefix_scores_equal_brute_force_over_steps(length):
    """Prefixes a, ab, aba, abb, aa (a repeat needs a blank between) and b, on a row padded to
    5 frames whose length is `length`: every psi equals the sum over paths, and the whole
    sequence's final score equals the probability of exactly that output (= exp(-CTC loss))."""
    log_probs = _random_log_probs(0, 1, 5)
    lengths = np.array([length], np.int32)
    lp = jnp.asarray(log_probs)
    state = ctc.prefix_score_init(lp, jnp.asarray(lengths))
    psi, r = _extend(log_probs, lengths, state, [0], [True], [[1, 2]])
    for k, prefix in enumerate([(1,), (2,)]):
        assert psi[0, k] == pytest.approx(_prefix_prob(log_probs[0], length, prefix), abs=1e-5)
    r_a = r[..., 0]  # [T, 2, 1]: the state of "a"
    psi2, r2 = _extend(log_probs, lengths, (r_a, None), [1], [False], [[2, 1]])
    for k, prefix in enumerate([(1, 2), (1, 1)]):
        assert psi2[0, k] == pytest.approx(_prefix_prob(log_probs[0], length, prefix), abs=1e-5)
    r_ab = r2[..., 0]
    psi3, _ = _extend(log_probs, lengths, (r_ab, None), [2], [False], [[1, 2]])
    for k, prefix in enumerate([(1, 2, 1), (1, 2, 2)]):
        expected = _prefix_prob(log_probs[0], length, prefix) if length >= 3 else -np.inf
        if np.isfinite(expected):
            assert psi3[0, k] == pytest.approx(expected, abs=1e-4)
        else:
            assert psi3[0, k] < -1e20
    # Ending: P(output == "ab") from the state of "ab", against optax's CTC loss.
    final = float(ctc.prefix_final(r_ab, jnp.asarray(lengths))[0])
    exact = np.log(sum(np.exp(v) for out, v, _ in _paths(log_probs[0], length) if out == (1, 2)))
    assert final == pytest.approx(exact, abs=1e-5)
    frame_pad = (np.arange(5) >= length).astype(np.float32)[None]
    loss = optax.ctc_loss(lp, frame_pad, jnp.array([[1, 2]]), jnp.zeros((1, 2)), blank_id=BLANK)
    assert final == pytest.approx(-float(loss[0]), abs=1e-5)


def test_prefix_scores_are_batched_per_hypothesis():
    """Rows of different lengths and beams stacked as N hypotheses give each row's own answer."""
    log_probs = _random_log_probs(1, 2, 5)
    lengths = np.array([5, 4], np.int32)
    hyp_lp = np.repeat(log_probs, 2, axis=0)  # [N=4, T, V]: 2 beams per row
    hyp_len = np.repeat(lengths, 2)
    state = ctc.prefix_score_init(jnp.asarray(hyp_lp), jnp.asarray(hyp_len))
    psi, _ = _extend(hyp_lp, hyp_len, state, [0] * 4, [True] * 4, [[1, 2], [2, 1]] * 2)
    for n in range(4):
        for k, c in enumerate([[1, 2], [2, 1]][n % 2]):
            row = n // 2
            expected = _prefix_prob(log_probs[row], lengths[row], (c,))
            assert psi[n, k] == pytest.approx(expected, abs=1e-5)


def test_greedy_merges_repeats_drops_blanks_and_padding():
    best = np.array([[1, 1, 0, 1, 2, 2, 0, 2], [0, 2, 2, 1, 1, 1, 2, 1]])
    log_probs = np.log(np.eye(3)[best] * 0.9 + 0.1 / 3)
    ids, count = ctc.ctc_greedy(jnp.asarray(log_probs), jnp.array([8, 5]), pad=9)
    assert count.tolist() == [4, 2]
    assert ids.tolist() == [[1, 1, 2, 2, 9, 9, 9, 9], [2, 1, 9, 9, 9, 9, 9, 9]]


@pytest.mark.parametrize("labels, length", [((1, 2), 5), ((1, 1), 5), ((2,), 4), ((1, 2, 1), 5)])
def test_forced_alignment_is_the_best_path(labels, length):
    log_probs = _random_log_probs(2, 1, 6)
    best_score, best_path = max(
        (lp, path) for out, lp, path in _paths(log_probs[0], length) if out == labels
    )
    padded = np.zeros((1, 4), np.int32)
    padded[0, : len(labels)] = labels
    token, score = ctc.forced_align(
        jnp.asarray(log_probs), jnp.array([length]), jnp.asarray(padded), jnp.array([len(labels)])
    )
    assert float(score[0]) == pytest.approx(best_score, abs=1e-5)
    # The frames of the path, mapped back: blank -> -1, a label -> its index in `labels`.
    expected, k, prev = [], -1, BLANK
    for s in best_path:
        if s != BLANK and s != prev:
            k += 1
        expected.append(k if s != BLANK else -1)
        prev = s
    assert token[0].tolist() == expected + [-1] * (6 - length)


def test_forced_alignment_of_an_impossible_sequence_scores_minus_infinity():
    log_probs = _random_log_probs(3, 1, 3)
    token, score = ctc.forced_align(
        jnp.asarray(log_probs), jnp.array([3]), jnp.array([[1, 1, 1]]), jnp.array([3])
    )  # a a a needs 5 frames
    assert float(score[0]) < -1e20


def test_prefix_beam_search_with_a_wide_beam_is_exact():
    """With every token tried and a beam wider than the number of outputs, each returned
    sequence's score is the exact total probability of the paths collapsing to it."""
    from s2t_jax.decoding.ctc_beam import ctc_prefix_beam_search

    log_probs = _random_log_probs(4, 1, 5)[0]
    exact = {}
    for out, lp, _ in _paths(log_probs, 5):
        exact[out] = np.logaddexp(exact.get(out, -np.inf), lp)
    found = ctc_prefix_beam_search(log_probs, beam_size=len(exact), token_beam=3)
    assert len(found) == len(exact)
    for prefix, score in found:
        assert score == pytest.approx(exact[prefix], abs=1e-5)
    best = max(exact, key=exact.get)
    assert ctc_prefix_beam_search(log_probs, beam_size=4)[0][0] == best
