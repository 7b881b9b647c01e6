"""Cutting long audio at pauses: cuts land in pauses, lengths stay within the limits, every
speech frame is kept once, and a stretch without a pause is cut at its quietest frame."""

from __future__ import annotations

import numpy as np
import pytest

from s2t_jax.frontend.segment import SegmenterConfig, cut_spans, segment

RATE = 16000


def _recording(rng, parts):
    """parts: [(seconds, is_speech)] -> waveform: voiced bursts (tones + noise) and pauses
    (quiet noise 40 dB down)."""
    chunks, spans, t = [], [], 0
    for seconds, is_speech in parts:
        n = int(seconds * RATE)
        noise = 0.003 * rng.standard_normal(n)
        if is_speech:
            time = np.arange(n) / RATE
            voice = 0.3 * np.sin(2 * np.pi * 180 * time) * (1 + 0.5 * np.sin(2 * np.pi * 3 * time))
            chunks.append(voice + noise)
            spans.append((t, t + n))
        else:
            chunks.append(noise)
        t += n
    return np.concatenate(chunks).astype(np.float32), spans


def test_cuts_fall_in_pauses_and_respect_the_limits():
    rng = np.random.default_rng(0)
    parts = []
    for _ in range(12):
        parts += [(rng.uniform(1.0, 3.0), True), (rng.uniform(0.3, 1.0), False)]
    wave, spans = _recording(rng, parts)
    config = SegmenterConfig(min_seconds=2.0, max_seconds=8.0)
    segments = segment(wave, RATE, config)
    assert segments == sorted(segments)
    for a, b in segments:
        assert (b - a) / RATE <= config.max_seconds + 1e-9
    for (_, b), (c, _) in zip(segments[:-1], segments[1:]):
        assert b <= c  # no overlap
        # Each cut is inside a pause: never within a voiced span (10 ms of slack).
        assert all(not (s + 160 < b < e - 160) for s, e in spans)
    # Every voiced span lies inside one segment.
    for s, e in spans:
        assert any(a <= s + 160 and e - 160 <= b for a, b in segments), (s, e)
    assert len(segments) >= (len(wave) / RATE) / config.max_seconds


def test_speech_without_a_pause_is_cut_at_its_quietest_frame():
    rng = np.random.default_rng(1)
    wave, _ = _recording(rng, [(0.5, False), (25.0, True), (0.5, False)])
    dip = int(6.5 * RATE)  # a 30 ms dip inside the speech, too short to be a pause
    wave[dip : dip + 480] *= 0.05
    config = SegmenterConfig(min_seconds=2.0, max_seconds=8.0, search_seconds=3.0)
    segments = segment(wave, RATE, config)
    first_cut = segments[0][1]
    assert abs(first_cut - dip) < 0.03 * RATE, first_cut / RATE
    assert all((b - a) / RATE <= 8.0 for a, b in segments)


def test_silence_gives_no_segment_and_bad_limits_are_refused():
    rng = np.random.default_rng(2)
    assert segment(0.001 * rng.standard_normal(3 * RATE), RATE) == []
    with pytest.raises(ValueError, match="min_seconds"):
        SegmenterConfig(min_seconds=10, max_seconds=5)


def test_every_long_pause_is_a_cut_so_segments_are_sentences():
    """With the defaults, each stretch of speech between pauses of 0.4 s or more is its own
    segment (as a VAD front end cuts), however short the maximum would allow merging."""
    rng = np.random.default_rng(3)
    parts = [(0.2, False)]
    for _ in range(6):
        parts += [(rng.uniform(1.2, 2.5), True), (rng.uniform(0.45, 0.8), False)]
    wave, spans = _recording(rng, parts)
    segments = segment(wave, RATE)
    assert len(segments) == len(spans)
    for (a, b), (s, e) in zip(segments, spans):
        assert a <= s + 160 and e - 160 <= b


def test_segments_are_trimmed_to_their_speech_plus_the_margin():
    """A cut in mid-pause would hand the model up to half of each pause as leading and trailing
    noise; each segment keeps `margin_seconds` of it instead."""
    rng = np.random.default_rng(4)
    wave, spans = _recording(
        rng, [(1.5, False), (2.0, True), (1.6, False), (1.5, True), (1.5, False)]
    )
    config = SegmenterConfig(margin_seconds=0.2)
    segments = segment(wave, RATE, config)
    assert len(segments) == 2
    margin = int(0.2 * RATE)
    for (a, b), (s, e) in zip(segments, spans):
        assert abs(a - (s - margin)) <= 0.03 * RATE, (a - s) / RATE
        assert abs(b - (e + margin)) <= 0.03 * RATE, (b - e) / RATE


def test_cut_spans_on_given_decisions():
    """The cutting rules alone, on hand-made 10 ms decisions: 1 s speech, 0.5 s pause, 1.5 s
    speech. The pause is a cut; each side keeps 20 frames (0.2 s) of it."""
    speech = np.zeros(300, bool)
    speech[:100] = speech[150:] = True
    energy = np.where(speech, -20.0, -60.0)
    config = SegmenterConfig(min_seconds=0.5, max_seconds=20.0, margin_seconds=0.2)
    n_samples = 299 * 160 + 400
    assert cut_spans(speech, energy, n_samples, RATE, config) == [
        (0, 120 * 160),
        (130 * 160, n_samples),
    ]
    with pytest.raises(ValueError, match="energy_db"):
        cut_spans(speech, energy[:-1], n_samples, RATE, config)


def test_a_pause_in_louder_noise_than_the_speech_before_it_is_still_a_pause():
    """A quiet recording, then a 0.6 s pause and a sentence in noise 22 dB louder (another
    speaker's recording): the pause is a cut. A floor taken over the whole window stays at the
    quiet side's level and calls the loud pause speech (floor_sides=1 shows it)."""
    rng = np.random.default_rng(5)
    time = np.arange(RATE) / RATE
    voice = 0.3 * np.sin(2 * np.pi * 180 * time) * (1 + 0.5 * np.sin(2 * np.pi * 3 * time))
    quiet, loud = 0.0005, 0.006  # noise std: 21.6 dB apart; the voice 34 dB above the loud
    parts = [
        quiet * rng.standard_normal(RATE),
        voice + quiet * rng.standard_normal(len(voice)),
        loud * rng.standard_normal(int(0.6 * RATE)),  # the pause, in the next recording's noise
        voice + loud * rng.standard_normal(len(voice)),
        loud * rng.standard_normal(int(0.5 * RATE)),
    ]
    wave = np.concatenate(parts).astype(np.float32)
    gap = (int(2.0 * RATE), int(2.6 * RATE))
    segments = segment(wave, RATE)
    assert len(segments) == 2
    assert gap[0] <= segments[0][1] <= segments[1][0] <= gap[1]
    assert len(segment(wave, RATE, SegmenterConfig(floor_sides=1))) == 1


@pytest.mark.parametrize(
    "field, value",
    [("margin_seconds", -0.1), ("floor_sides", 3), ("cut_pause_seconds", 0.0)],
)
def test_bad_settings_are_refused_by_name(field, value):
    """A setting out of range fails at construction, naming itself."""
    with pytest.raises(ValueError, match=field):
        SegmenterConfig(**{field: value})


def test_a_closure_inside_a_sentence_is_not_a_cut():
    """A 0.3 s silence between two voiced stretches (eSpeak's "stopped twice" has one) stays
    inside the segment: the default cut needs 0.4 s."""
    rng = np.random.default_rng(6)
    wave, spans = _recording(
        rng, [(0.5, False), (1.5, True), (0.3, False), (1.5, True), (0.5, False)]
    )
    assert len(segment(wave, RATE)) == 1
    assert len(segment(wave, RATE, SegmenterConfig(cut_pause_seconds=0.25))) == 2
