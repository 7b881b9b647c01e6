"""Cutting long audio at pauses: cuts land in pauses, lengths stay within the limits, every
speech frame is kept once, and a stretch without a pause is cut at its quietest frame."""

from __future__ import annotations

import numpy as np
import pytest

from s2t_jax.frontend.segment import SegmenterConfig, segment

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
    """With the defaults, each stretch of speech between pauses of 0.3 s or more is its own
    segment (as a VAD front end cuts), however short the maximum would allow merging."""
    rng = np.random.default_rng(3)
    parts = [(0.2, False)]
    for _ in range(6):
        parts += [(rng.uniform(1.2, 2.5), True), (rng.uniform(0.35, 0.8), False)]
    wave, spans = _recording(rng, parts)
    segments = segment(wave, RATE)
    assert len(segments) == len(spans)
    for (a, b), (s, e) in zip(segments, spans):
        assert a <= s + 160 and e - 160 <= b
