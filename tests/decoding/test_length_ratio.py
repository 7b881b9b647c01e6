"""ESPnet's maxlenratio / minlenratio in generate(): per-row limits from each row's encoder length.

Known answers: a row's encoder length T follows from its valid frames by the conv subsampler's
arithmetic (two stride-2 convs, kernel 5, padding 2: T = floor((n - 1) / 2) + 1 per conv), and
ESPnet's rules give maxlen = T if maxlenratio == 0 else max(1, int(maxlenratio * T)) labels,
then eos; and at least minlen = int(minlenratio * T) labels. The references are our
transformers-parity searches with the equivalent fixed limits (max_length, min_length).
"""

from __future__ import annotations

import numpy as np

from tests.decoding.conftest import ctc_features

EOS, PAD = 2, 1
FRAMES = (48, 30, 17)  # valid frames per row -> encoder lengths 12, 8, 5


def encoder_length(frames: int, convs: int = 2) -> int:
    for _ in range(convs):
        frames = (frames - 1) // 2 + 1
    return frames


def features():
    x, _ = ctc_features(batch=len(FRAMES), frames=max(FRAMES), seed=4)
    mask = (np.arange(max(FRAMES))[None, :] < np.array(FRAMES)[:, None]).astype(np.int32)
    return x, mask


def labels(row) -> list[int]:
    """The generated tokens of one output row, up to (not including) eos."""
    row = list(row[1:])
    return row[: row.index(EOS)] if EOS in row else row


def test_maxlenratio_caps_each_row_by_its_own_encoder_length(ctc_model):
    x, mask = features()
    lengths = [encoder_length(n) for n in FRAMES]
    assert lengths == [12, 8, 5]
    ratio = 0.7  # int(0.7 * 10)-style products must floor as Python's float64 does
    caps = [max(1, int(ratio * t)) for t in lengths]  # [8, 5, 3]
    # eos suppressed, so no hypothesis ends on its own: every row runs to its cap.
    common = dict(suppress_tokens=[EOS], max_length=30, buckets=None)
    for beams in (1, 3):
        plain = ctc_model.generate(x, mask, num_beams=beams, **common)
        capped = ctc_model.generate(x, mask, num_beams=beams, maxlenratio=ratio, **common)
        full = ctc_model.generate(x, mask, num_beams=beams, maxlenratio=0.0, **common)
        for i, (cap, t) in enumerate(zip(caps, lengths)):
            assert len(labels(capped[i])) == cap and capped[i, cap + 1] == EOS
            assert (capped[i, cap + 2 :] == PAD).all()
            assert len(labels(full[i])) == t and full[i, t + 1] == EOS  # ratio 0: T labels
            if beams == 1:  # greedy is prefix-consistent: the plain search's first labels
                assert labels(capped[i]) == list(plain[i, 1 : cap + 1])
                assert labels(full[i]) == list(plain[i, 1 : t + 1])
        if beams > 1:
            # Reference: transformers' max_length finishes every hypothesis after `cap`
            # labels, ranked as a free eos ranks them (one row: each cap is a compile).
            ref = ctc_model.generate(x, mask, num_beams=beams, **dict(common, max_length=9))
            assert labels(capped[0]) == list(ref[0, 1:9])


def test_maxlenratio_in_joint_ctc_attention_decoding(ctc_model):
    x, mask = features()
    lengths = [encoder_length(n) for n in FRAMES]
    out = ctc_model.generate(
        x,
        mask,
        num_beams=3,
        maxlenratio=0.0,
        ctc_weight=0.3,
        suppress_tokens=[EOS],
        max_length=30,
        buckets=None,
    )
    assert [len(labels(r)) for r in out] == lengths
    assert all(r[t + 1] == EOS for r, t in zip(out, lengths))


def test_max_length_still_bounds_every_row_and_ends_it_with_eos(ctc_model):
    x, mask = features()
    common = dict(suppress_tokens=[EOS], max_length=30, buckets=None)
    plain = ctc_model.generate(x, mask, **common)
    # The ratio allows 120, 80, 50 labels; max_length 30 (start, 28 labels, eos) binds first
    # and ends each row with eos where transformers' ends it without.
    out = ctc_model.generate(x, mask, maxlenratio=10.0, **common)
    assert out.shape == plain.shape == (3, 30)
    np.testing.assert_array_equal(out[:, :-1], plain[:, :-1])
    assert (out[:, -1] == EOS).all() and (plain[:, -1] != EOS).all()


def test_minlenratio_is_a_per_row_min_length_and_unset_ratios_change_nothing(ctc_model):
    x, mask = features()
    lengths = [encoder_length(n) for n in FRAMES]
    ratio = 0.5
    minlens = [int(ratio * t) for t in lengths]  # [6, 4, 2] labels at least
    common = dict(num_beams=3, max_length=30, buckets=None)
    plain = ctc_model.generate(x, mask, **common)
    unset = ctc_model.generate(x, mask, maxlenratio=None, minlenratio=None, **common)
    np.testing.assert_array_equal(unset, plain)
    out = ctc_model.generate(x, mask, minlenratio=ratio, **common)
    for i, minlen in enumerate(minlens):
        # transformers' min_length counts the start token and bans eos before it: minlen
        # labels at least is min_length = minlen + 1. Both are traced: no recompile.
        ref = ctc_model.generate(x, mask, min_length=minlen + 1, **common)
        assert labels(out[i]) == labels(ref[i])
        assert len(labels(out[i])) >= minlen
    # The random model ends some rows sooner than their minlen, so the limit is exercised.
    assert any(len(labels(plain[i])) < m for i, m in enumerate(minlens))


def test_bad_ratios_are_refused_by_name(ctc_model):
    import pytest

    x, mask = features()
    for name, value in (("maxlenratio", -1.0), ("minlenratio", float("nan")), ("maxlenratio", "1")):
        with pytest.raises(ValueError, match=name):
            ctc_model.generate(x, mask, **{name: value})


def test_transcribe_refuses_bad_length_ratios(capsys):
    from s2t_jax.transcribe import main

    for argv in (
        ["--maxlenratio", "-0.5"],
        ["--minlenratio", "nan"],
        ["--maxlenratio", "1.0", "--decoder", "ctc_greedy"],
    ):
        assert main(["--model", "unused", *argv, "a.wav"]) == 2
        assert argv[0] in capsys.readouterr().err
