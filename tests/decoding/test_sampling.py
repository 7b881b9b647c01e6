"""Sampling (do_sample with temperature, top_k, top_p) inside the jitted loop.

Draws cannot equal transformers' (another RNG), so the tests check what can be checked: the
processed scores a step samples from equal transformers' (warpers included), the sampled tokens
follow softmax of those scores (a chi-square test over many rows and several steps), a fixed
key reproduces the result whatever the padding, and beam sampling at a tiny temperature is
transformers' beam sampling, which is then deterministic.
"""

import jax
import numpy as np
import pytest
import torch

from s2t_jax.decoding import search
from s2t_jax.decoding.search import make_generate_fn
from tests.decoding.conftest import hf_generate, speech_features

ROWS = 2000
FRAMES = 100


@pytest.fixture(scope="module")
def wide(varied):
    hf, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=(1.5, 0.8, 1.1))
    return hf, ours, x, mask


def _chi_square_bound(dof: int, z: float = 3.5) -> float:
    """The chi-square quantile at normal quantile z (Wilson-Hilferty; z=3.5: p ~ 2e-4)."""
    return dof * (1 - 2 / (9 * dof) + z * np.sqrt(2 / (9 * dof))) ** 3


def _assert_follows(observed_tokens, probs):
    """observed_tokens [n]; probs [n, vocab], each row's distribution: the counts against the
    summed probabilities, bins with under 5 expected merged."""
    vocab = probs.shape[1]
    observed = np.bincount(observed_tokens, minlength=vocab).astype(np.float64)
    expected = probs.sum(0)
    assert observed[expected == 0].sum() == 0, "a token of probability 0 was drawn"
    big = expected >= 5
    obs = np.append(observed[big], observed[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    chi2 = (((obs - exp) ** 2)[keep] / exp[keep]).sum()
    dof = int(keep.sum()) - 1
    assert dof >= 3, "too few bins for a meaningful test"
    assert chi2 < _chi_square_bound(dof), (chi2, dof)


def _softmax(scores):
    e = np.exp(scores - scores.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize(
    "warpers",
    [dict(top_k=0), dict(temperature=1.3, top_k=12, top_p=0.7)],
    ids=["plain", "temperature_top_k_top_p"],
)
def test_samples_follow_the_processed_distribution(wide, warpers):
    hf, ours, x, _ = wide
    x1 = x[:1, :FRAMES]
    kwargs = dict(do_sample=True, max_new_tokens=3, **warpers)
    with torch.no_grad():
        ref = hf.generate(
            input_features=torch.tensor(x1),
            return_dict_in_generate=True,
            output_scores=True,
            **dict(kwargs, max_new_tokens=1),
        )
    out = ours.generate(
        x1,
        num_return_sequences=ROWS,
        prng_key=7,
        return_dict_in_generate=True,
        output_scores=True,
        **kwargs,
    )
    assert out.sequences.shape[0] == ROWS and len(out.scores) >= 2
    # Step 1: the distribution sampled from is transformers' (processors and warpers).
    first = out.scores[0]  # [ROWS, vocab], identical rows
    ref_first = ref.scores[0].numpy()[0]
    np.testing.assert_array_equal(np.isneginf(first[0]), np.isneginf(ref_first))
    finite = np.isfinite(ref_first)
    np.testing.assert_allclose(first[0][finite], ref_first[finite], atol=1e-4)
    # Every step: the drawn tokens follow softmax of the scores each row drew from.
    eos = ours.config.eos_token_id
    live = np.ones(ROWS, bool)
    for step, scores in enumerate(out.scores):
        tokens = out.sequences[:, step + 1]
        if live.sum() >= 500:
            _assert_follows(tokens[live], _softmax(scores[live]))
        live &= tokens != eos
    # Not vacuous: many distinct first tokens.
    assert len(np.unique(out.sequences[:, 1])) >= (5 if warpers.get("top_p") else 15)


def test_a_fixed_key_reproduces_whatever_the_padding(wide):
    _, ours, x, mask = wide
    kwargs = dict(do_sample=True, max_length=12, top_k=0)
    ids = ours.generate(x, mask, prng_key=3, **kwargs)
    np.testing.assert_array_equal(ours.generate(x, mask, prng_key=3, **kwargs), ids)
    np.testing.assert_array_equal(ours.generate(x, mask, prng_key=3, buckets=None, **kwargs), ids)
    # A row draws with its own key, so it does not depend on its batch mates.
    alone = ours.generate(x[:1], mask[:1], prng_key=3, **kwargs)
    np.testing.assert_array_equal(alone, ids[:1, : alone.shape[1]])
    # Another key or temperature is a traced value: no new compile.
    traces = sum(search.TRACE_COUNTS.values())
    other = ours.generate(x, mask, prng_key=4, **kwargs)
    assert other.shape != ids.shape or not np.array_equal(other, ids)
    ours.generate(x, mask, prng_key=jax.random.key(5), **dict(kwargs, temperature=0.5))
    assert sum(search.TRACE_COUNTS.values()) == traces


def test_make_generate_fn_samples_with_a_key(wide):
    _, ours, x, mask = wide
    fn = make_generate_fn(ours.config, do_sample=True, top_k=0, max_length=6)
    with pytest.raises(ValueError, match="prng_key"):
        fn(ours.params, x, mask)
    ids, _ = fn(ours.params, x, mask, prng_key=jax.random.key(1))
    again, _ = fn(ours.params, x, mask, prng_key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(ids), np.asarray(again))
    # Row i draws with fold_in(key, i), as generate() does (on the same padded frames).
    ref = ours.generate(x, mask, do_sample=True, top_k=0, max_length=6, buckets=None,
                        prng_key=jax.random.key(1))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(ids)[:, : ref.shape[1]], ref)


def test_beam_sampling_at_low_temperature_is_transformers(wide):
    """At temperature 0.01 the accumulated scores are 100x apart, so drawing the candidates
    without replacement takes them best first, in both libraries: same ids and scores."""
    hf, ours, x, mask = wide
    kwargs = dict(do_sample=True, num_beams=3, max_length=12, temperature=0.01, top_k=0)
    torch.manual_seed(0)
    ref_ids, ref_scores = hf_generate(hf, x, mask, num_return_sequences=2, **kwargs)
    ids, scores = ours.generate(x, mask, prng_key=0, num_return_sequences=2, return_scores=True,
                                **kwargs)  # fmt: skip
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)
    # At temperature 1 it samples: other keys, other hypotheses.
    kwargs["temperature"] = 1.0
    draws = {ours.generate(x, mask, prng_key=k, **kwargs).tobytes() for k in range(3)}
    assert len(draws) > 1


def test_sampling_refuses_bad_values(wide):
    _, ours, x, mask = wide
    for bad in (dict(temperature=0.0), dict(top_p=1.5), dict(top_k=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ours.generate(x, mask, do_sample=True, max_length=4, **bad)
