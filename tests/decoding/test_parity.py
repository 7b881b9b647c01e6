"""Token ids (and beam scores) identical to transformers' `generate` on the same checkpoints.

Both sides see the same padded batch of real-audio features with its mask, and we pass
buckets=None so no extra padding is added: the conv subsampler lets padding leak into the last
valid frames (fairseq issue 3078), so a different amount of padding is a different input.
"""

import numpy as np
import pytest

from tests.decoding.conftest import hf_generate, speech_features

MAX_LENGTH = 30
SCORE_TOL = dict(atol=1e-4, rtol=1e-6)  # float32 sums over ~30 steps, some x length

CASES = {
    "greedy": dict(num_beams=1),
    "greedy_min_length": dict(num_beams=1, min_length=20),
    "greedy_ngram3": dict(num_beams=1, no_repeat_ngram_size=3),
    "beam4": dict(num_beams=4),
    "beam5": dict(num_beams=5),
    "beam4_early": dict(num_beams=4, early_stopping=True),
    "beam5_early": dict(num_beams=5, early_stopping=True),
    "beam4_lp2_early": dict(num_beams=4, length_penalty=2.0, early_stopping=True),
    "beam5_lp0.5_early": dict(num_beams=5, length_penalty=0.5, early_stopping=True),
    "beam5_lp1.5_not_early": dict(num_beams=5, length_penalty=1.5, early_stopping=False),
    "beam4_lp-1_not_early": dict(num_beams=4, length_penalty=-1.0),
    "beam4_never": dict(num_beams=4, length_penalty=1.3, early_stopping="never"),
    "beam4_min_length": dict(num_beams=4, min_length=20),
    "beam4_ngram2": dict(num_beams=4, no_repeat_ngram_size=2),
    "beam5_return3": dict(num_beams=5, num_return_sequences=3),
}


def _check(hf, ours, x, mask, **kwargs):
    if "max_new_tokens" not in kwargs:
        kwargs.setdefault("max_length", MAX_LENGTH)
    ref_ids, ref_scores = hf_generate(hf, x, mask, **kwargs)
    ids, scores = ours.generate(x, mask, buckets=None, return_scores=True, **kwargs)
    assert ids.shape == ref_ids.shape, (ids, ref_ids)
    np.testing.assert_array_equal(ids, ref_ids)
    if kwargs.get("num_beams", 1) > 1:
        np.testing.assert_allclose(scores, ref_scores, **SCORE_TOL)
    return ids


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", ["conv3_gelu_untied", "wide_untied"])
def test_generate_matches_transformers(varied, name, case):
    hf, ours, _ = varied(name)
    x, mask = speech_features(ours.config.input_feat_per_channel)
    kwargs = CASES[case]
    _check(hf, ours, x, mask, **kwargs)
    if kwargs["num_beams"] > 1 and "num_return_sequences" not in kwargs:
        # Every finished hypothesis, in order, with its score: the whole finished set.
        _check(hf, ours, x, mask, num_return_sequences=kwargs["num_beams"], **kwargs)


def test_beam_settings_change_the_result(varied):
    """Guards the beam cases from being vacuous: on this model, early stopping and the length
    penalty change which hypotheses win."""
    _, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel)
    names = ["beam4", "beam4_early", "beam4_lp2_early", "beam4_never", "beam4_lp-1_not_early"]
    outputs = {
        ours.generate(x, mask, max_length=MAX_LENGTH, buckets=None, **CASES[n]).tobytes()
        for n in names
    }
    assert len(outputs) >= 4


@pytest.mark.parametrize("case", ["greedy", "beam4", "beam5_lp0.5_early", "beam5_return3"])
def test_tied_embeddings_shape(varied, case):
    hf, ours, _ = varied("tiny")
    x, mask = speech_features(ours.config.input_feat_per_channel)
    _check(hf, ours, x, mask, **CASES[case])


@pytest.mark.parametrize("name", ["conv3_gelu_untied", "wide_untied"])
@pytest.mark.parametrize("num_beams", [1, 5])
def test_outputs_are_not_degenerate(varied, name, num_beams):
    """Guards the other tests from being vacuous: outputs vary across the batch, some stop at
    eos early, some run to max_length."""
    hf, ours, _ = varied(name)
    x, mask = speech_features(ours.config.input_feat_per_channel)
    ids = _check(hf, ours, x, mask, num_beams=num_beams)
    eos, pad = ours.config.eos_token_id, ours.config.pad_token_id
    lengths = (ids != pad).sum(1)
    stopped = (ids[:, 1:] == eos).any(1)
    assert len({tuple(row) for row in ids.tolist()}) >= 4
    assert stopped.any() and (lengths < MAX_LENGTH).any(), lengths
    assert (lengths == MAX_LENGTH).any(), lengths


@pytest.mark.parametrize("num_beams", [1, 4])
def test_forced_bos_multilingual(varied, num_beams):
    """Multilingual S2T forces a language tag as the first generated token."""
    hf, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel)
    lang_id = ours.config.vocab_size - 3
    ids = _check(hf, ours, x, mask, num_beams=num_beams, forced_bos_token_id=lang_id)
    assert (ids[:, 1] == lang_id).all()


def test_max_new_tokens(varied):
    hf, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel)
    assert _check(hf, ours, x, mask, num_beams=4, max_new_tokens=12).shape[1] <= 13


def test_without_attention_mask(varied):
    hf, ours, _ = varied("conv3_gelu_untied")
    x, _ = speech_features(ours.config.input_feat_per_channel)
    _check(hf, ours, x, None, num_beams=4)
    _check(hf, ours, x, None, num_beams=1)


def test_return_dict(varied):
    hf, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel)
    ref_ids, ref_scores = hf_generate(hf, x, mask, num_beams=4, max_length=MAX_LENGTH)
    out = ours.generate(
        x,
        mask,
        num_beams=4,
        max_length=MAX_LENGTH,
        buckets=None,
        return_dict_in_generate=True,
        output_scores=True,
    )
    np.testing.assert_array_equal(out.sequences, ref_ids)
    np.testing.assert_allclose(out["sequences_scores"], ref_scores, **SCORE_TOL)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_forced_bos_per_utterance(varied, num_beams):
    """A [batch] array of forced first tokens (validation of multilingual ST forces each
    utterance's own language tag): row i matches transformers run with that row's token."""
    from s2t_jax.decoding.search import make_generate_fn

    hf, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel)
    langs = [ours.config.vocab_size - 3, ours.config.vocab_size - 4]
    per_row = np.asarray([langs[i % 2] for i in range(len(x))], np.int32)
    fn = make_generate_fn(ours.config, num_beams=num_beams, max_length=MAX_LENGTH)
    ids, _ = fn(ours.params, x, mask, forced_bos_token_ids=per_row)
    ids = np.asarray(ids)
    pad = ours.config.pad_token_id
    for lang in langs:
        ref, _ = hf_generate(hf, x, mask, num_beams=num_beams, max_length=MAX_LENGTH,
                             forced_bos_token_id=lang)  # fmt: skip
        for row in np.flatnonzero(per_row == lang):
            got = ids[row][ids[row] != pad]
            np.testing.assert_array_equal(got, ref[row][ref[row] != pad])
    assert (ids[:, 1] == per_row).all()
