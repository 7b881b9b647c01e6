"""generate()'s transformers surface: bucket padding that changes nothing, the extra logits
processors, return_dict_in_generate outputs, and refusing what we do not support. Every result
is compared with transformers' generate on the same random-weight checkpoint and inputs."""

import collections

import numpy as np
import pytest
import torch

from tests.decoding.conftest import hf_generate, speech_features

SECONDS = (1.5, 0.8, 1.1)
MAX_LENGTH = 12
EXACT = dict(atol=1e-5, rtol=0)  # scores where only float rounding may differ
STEP_TOL = dict(atol=1e-4, rtol=1e-6)


@pytest.fixture(scope="module")
def wide(varied):
    hf, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=SECONDS)
    return hf, ours, x, mask


def _hf_dict(hf, x, mask, **kwargs):
    with torch.no_grad():
        return hf.generate(
            input_features=torch.tensor(x),
            attention_mask=None if mask is None else torch.tensor(mask),
            return_dict_in_generate=True,
            **kwargs,
        )


def _assert_steps_equal(ours, ref, **tol):
    """Per-step [rows, vocab] arrays equal, -inf where transformers has -inf."""
    assert len(ours) == len(ref)
    for step, (a, b) in enumerate(zip(ours, ref)):
        b = b.numpy()
        assert a.shape == b.shape, step
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg=f"step {step}")
        finite = np.isfinite(b)
        np.testing.assert_allclose(a[finite], b[finite], err_msg=f"step {step}", **tol)


# --- 1. Bucket padding is invisible --------------------------------------------------------


@pytest.mark.parametrize("single", [True, False], ids=["one_unpadded", "mixed_batch"])
def test_bucket_padding_gives_transformers_scores(wide, single):
    """With the default buckets, generate() pads frames the user did not pad; the convs must
    see zeros past the user's frames, as transformers' do (before the fix: 4e-4 apart)."""
    hf, ours, x, mask = wide
    if single:  # one utterance, no padding, no mask: 248 frames padded to the 256 bucket
        x, mask = x[:1, : int(mask[0].sum())], None
    beam = ours.generate(x, mask, num_beams=4, max_length=20, return_scores=True)
    ref_ids, ref_scores = hf_generate(hf, x, mask, num_beams=4, max_length=20)
    np.testing.assert_array_equal(beam[0], ref_ids)
    np.testing.assert_allclose(beam[1], ref_scores, **EXACT)
    # Greedy: every step's processed scores (greedy records them on one search).
    out = ours.generate(x, mask, max_length=20, return_dict_in_generate=True, output_scores=True)
    ref = _hf_dict(hf, x, mask, max_length=20, output_scores=True)
    np.testing.assert_array_equal(out.sequences, ref.sequences.numpy())
    _assert_steps_equal(out.scores, ref.scores, **EXACT)


# --- 3. Logits processors ------------------------------------------------------------------


def _baseline(ours, x, mask):
    ids = ours.generate(x, mask, max_length=MAX_LENGTH)
    special = {ours.config.eos_token_id, ours.config.pad_token_id}
    body = [row[1:][~np.isin(row[1:], list(special))].tolist() for row in ids]
    common = collections.Counter(t for row in body for t in row).most_common()
    bigrams = collections.Counter(
        tuple(row[i : i + 2]) for row in body for i in range(len(row) - 1)
    )
    return ids, [t for t, _ in common], [list(b) for b, _ in bigrams.most_common(2)]


def _processor_cases(ours, x, mask):
    base, common, bigrams = _baseline(ours, x, mask)
    first = sorted(set(base[:, 1].tolist()))
    lang = ours.config.vocab_size - 3
    greedy = {  # each changes the greedy output on this model (asserted)
        "repetition_1.5": dict(repetition_penalty=1.5),
        "repetition_0.7": dict(repetition_penalty=0.7),  # same compile: the value is traced
        "bad_words": dict(bad_words_ids=[[common[0]], bigrams[0], bigrams[1]]),
        "suppress": dict(suppress_tokens=common[:2]),
        # One token list for both: the forced BOS (traced) moves where it applies.
        "begin_suppress": dict(begin_suppress_tokens=first + [lang]),
        "begin_suppress_forced_bos": dict(
            begin_suppress_tokens=first + [lang], forced_bos_token_id=lang
        ),
    }
    beam = {  # all at once, to keep compiles few
        "all": dict(
            repetition_penalty=1.3,
            bad_words_ids=[[common[0]], bigrams[0]],
            suppress_tokens=common[1:2],
            begin_suppress_tokens=first,
        ),
        "max_new_tokens": dict(max_new_tokens=5, repetition_penalty=1.3),
    }
    return base, greedy, beam


@pytest.mark.parametrize("num_beams", [1, 3])
def test_logits_processors_match_transformers(wide, num_beams):
    hf, ours, x, mask = wide
    base, greedy, beam = _processor_cases(ours, x, mask)
    cases = greedy if num_beams == 1 else beam
    for name, kwargs in cases.items():
        kwargs = dict(kwargs, num_beams=num_beams)
        if "max_new_tokens" not in kwargs:
            kwargs["max_length"] = MAX_LENGTH
        ref_ids, ref_scores = hf_generate(hf, x, mask, **kwargs)
        ids, scores = ours.generate(x, mask, return_scores=True, **kwargs)
        np.testing.assert_array_equal(ids, ref_ids, err_msg=name)
        if num_beams > 1:
            np.testing.assert_allclose(scores, ref_scores, err_msg=name, **STEP_TOL)
        else:  # not vacuous
            assert ids.shape != base.shape or not np.array_equal(ids, base), name


def test_forced_bos_that_is_suppressed_is_refused(wide):
    """transformers refuses forcing a token it also suppresses (all -inf, NaN probabilities)."""
    _, ours, x, mask = wide
    with pytest.raises(ValueError, match="suppress_tokens"):
        ours.generate(x, mask, max_length=6, forced_bos_token_id=9, suppress_tokens=[9, 10])


# --- 4. return_dict_in_generate ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_beams=1), dict(num_beams=3, num_return_sequences=2), dict(num_beams=3)],
    ids=["greedy", "beam3_return2", "beam3"],
)
def test_return_dict_outputs_match_transformers(wide, kwargs):
    hf, ours, x, mask = wide
    kwargs = dict(kwargs, max_length=MAX_LENGTH, no_repeat_ngram_size=2)
    ref = _hf_dict(hf, x, mask, output_scores=True, output_logits=True, **kwargs)
    out = ours.generate(
        x, mask, return_dict_in_generate=True, output_scores=True, output_logits=True, **kwargs
    )
    np.testing.assert_array_equal(out.sequences, ref.sequences.numpy())
    _assert_steps_equal(out.scores, ref.scores, **STEP_TOL)
    _assert_steps_equal(out.logits, ref.logits, **STEP_TOL)
    if kwargs["num_beams"] > 1:
        np.testing.assert_allclose(out.sequences_scores, ref.sequences_scores.numpy(), **STEP_TOL)
        np.testing.assert_array_equal(out.beam_indices, ref.beam_indices.numpy())
    else:
        assert out.sequences_scores is None and out.beam_indices is None
    assert set(out.keys()) == {k for k in ref.keys() if k in out.__dataclass_fields__}


def test_return_dict_without_per_step_outputs(wide):
    hf, ours, x, mask = wide
    ref = _hf_dict(hf, x, mask, num_beams=3, max_length=MAX_LENGTH)
    out = ours.generate(x, mask, num_beams=3, max_length=MAX_LENGTH, return_dict_in_generate=True)
    np.testing.assert_array_equal(out.sequences, ref.sequences.numpy())
    np.testing.assert_array_equal(out["beam_indices"], ref.beam_indices.numpy())
    assert out.scores is None and out.sequences_scores is None and out.logits is None


# --- 5. Unsupported arguments are refused --------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_beam_groups=2, num_beams=4), "num_beam_groups"),
        (dict(diversity_penalty=0.5), "diversity_penalty"),
        (dict(output_attentions=True), "output_attentions"),
        (dict(typical_p=0.9), "typical_p"),
        (dict(logits_processor=[object()]), "logits_processor"),
        (dict(forced_eos_token_id=2), "forced_eos_token_id"),
        (dict(num_beamz=2), "num_beamz"),
    ],
)
def test_unsupported_arguments_are_named(wide, kwargs, name):
    _, ours, x, mask = wide
    with pytest.raises(TypeError, match=name):
        ours.generate(x, mask, max_length=4, **kwargs)


def test_noop_values_are_accepted(wide):
    _, ours, x, mask = wide
    ids = ours.generate(
        x, mask, max_length=4, use_cache=True, num_beam_groups=1, logits_processor=None,
        output_attentions=False, typical_p=1.0,
    )  # fmt: skip
    assert ids.shape[0] == len(x)


def test_sampling_settings_without_do_sample_warn(wide):
    _, ours, x, mask = wide
    with pytest.warns(UserWarning, match="temperature"):
        ours.generate(x, mask, max_length=4, temperature=0.5)
