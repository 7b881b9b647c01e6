"""Segmenters on the VAD libraries' decisions (frontend/vad.py): on a real recording with noise
pauses, each cuts in the pauses and keeps all the speech; a missing library is named.

The tests that run a library skip only when that library is absent; the error-message tests
need no library and always run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from s2t_jax.frontend import vad
from s2t_jax.frontend.segment import SegmenterConfig

RATE = 16000
LIBRI = Path(__file__).resolve().parents[1] / "assets" / "1272-128104-0000.flac"


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def two_sentences():
    """noise 1.2 s | LibriSpeech utterance | noise 1.5 s | the same, 6 dB down | noise 1.2 s
    -> (waveform, [(first, last) sample of each copy's speech])."""
    speech, rate = soundfile.read(LIBRI, dtype="float32")
    assert rate == RATE
    loud = np.flatnonzero(np.abs(speech) > 0.1 * np.abs(speech).max())
    speech = speech[max(0, loud[0] - 800) : loud[-1] + 800]  # the file's own silences out
    rng = np.random.default_rng(0)
    noise = lambda seconds: 0.002 * rng.standard_normal(int(seconds * RATE))  # noqa: E731
    parts = [noise(1.2), speech, noise(1.5), 0.5 * speech, noise(1.2)]
    starts = np.cumsum([0] + [len(p) for p in parts])
    spans = [(starts[1] + 800, starts[2] - 800), (starts[3] + 800, starts[4] - 800)]
    return np.concatenate(parts).astype(np.float32), spans


def _check(segments, spans, wave):
    """Every segment lies within one copy (plus the pause around it), each copy's speech is
    covered, and no segment crosses the 1.5 s gap between the copies."""
    assert segments and segments == sorted(segments)
    gap = (spans[0][1], spans[1][0])
    for a, b in segments:
        assert not (a < gap[0] and b > gap[1]), (a / RATE, b / RATE)
    for s, e in spans:
        covered = sum(max(0, min(b, e) - max(a, s)) for a, b in segments)
        assert covered >= 0.97 * (e - s), covered / (e - s)
    assert all(0 <= a < b <= len(wave) for a, b in segments)


@pytest.mark.skipif(not _has("webrtcvad"), reason="webrtcvad-wheels is not installed")
def test_webrtc_cuts_between_the_sentences(two_sentences):
    # Its most aggressive mode: modes 0-2 call this white noise speech and join the two.
    wave, spans = two_sentences
    _check(vad.segment_webrtc(wave, RATE, aggressiveness=3), spans, wave)


@pytest.mark.skipif(not _has("webrtcvad"), reason="webrtcvad-wheels is not installed")
def test_webrtc_hears_no_speech_in_noise_and_refuses_bad_arguments():
    noise = 0.002 * np.random.default_rng(1).standard_normal(3 * RATE).astype(np.float32)
    # WebRTC calls its first few chunks speech while its noise model adapts
    assert not vad.webrtc_speech(noise, RATE, 3)[30:].any()
    with pytest.raises(ValueError, match="aggressiveness"):
        vad.webrtc_speech(noise, RATE, 4)
    with pytest.raises(ValueError, match="rate"):
        vad.webrtc_speech(noise, 22050)


@pytest.mark.skipif(
    not (_has("silero_vad") and _has("onnxruntime")),
    reason="silero-vad (with onnxruntime) is not installed",
)
def test_silero_cuts_between_the_sentences_without_importing_torch(two_sentences):
    wave, spans = two_sentences
    had_torch = "torch" in sys.modules
    segments = vad.segment_silero(wave, RATE, SegmenterConfig())
    _check(segments, spans, wave)
    assert had_torch or "torch" not in sys.modules
    probs = vad.silero_probabilities(wave, RATE)
    assert len(probs) == -(-len(wave) // 512)
    first = spans[0]
    assert probs[first[0] // 512 : first[1] // 512].mean() > 0.5  # speech
    assert probs[: int(1.0 * RATE) // 512].max() < 0.5  # leading noise
    with pytest.raises(ValueError, match="threshold"):
        vad.silero_speech(wave, RATE, threshold=1.5)


def test_a_missing_library_is_named_with_its_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "webrtcvad", None)  # import fails as if absent
    with pytest.raises(ImportError, match="pip install webrtcvad-wheels"):
        vad.webrtc_speech(np.zeros(RATE, np.float32), RATE)
    monkeypatch.setattr(vad.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="pip install silero-vad"):
        vad.silero_probabilities(np.zeros(RATE, np.float32), RATE)
