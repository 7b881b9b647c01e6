"""Shared decoding fixtures: random-weight checkpoints whose outputs vary, and real-audio features.

A random Speech2Text decoder mostly ignores the encoder and tends to repeat one pattern until
max_length (or to emit eos at once, with tied embeddings, since the start token is eos). Such a
model makes parity tests vacuous, so `varied_model` strengthens cross-attention (v/out
projections x4) and rescales the eos row of the output layer: with the real-audio segments below
some sequences then stop at eos at different steps while others reach max_length, which the
tests assert.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from s2t_jax import Speech2TextForConditionalGeneration
from tests.hf_models import SHAPES, make_hf_model, random_features

ROOT = Path(__file__).resolve().parents[2]
AUDIO_DIRS = (ROOT.parent / "shared" / "audio", ROOT / "tests" / "assets")
AUDIO_NAME = "1272-128104-0000.flac"

# (shape, seed, eos row scale): picked so that, on AUDIO_SECONDS, greedy and beam outputs differ
# across the batch and some stop early while others run to max_length.
VARIED = {
    "conv3_gelu_untied": ("conv3_gelu_untied", 3, 2.0),
    "wide_untied": ("wide_untied", 2, 1.5),
    "tiny": ("tiny", 0, 0.5),
}
AUDIO_SECONDS = (2.5, 1.9, 1.4, 0.9, 2.2, 0.6, 1.7, 1.2)


def make_varied_hf_model(shape: str, seed: int, eos_scale: float, cross_scale: float = 4.0):
    hf = make_hf_model(seed=seed, decisive=True, **SHAPES[shape])
    with torch.no_grad():
        for layer in hf.model.decoder.layers:
            layer.encoder_attn.v_proj.weight.mul_(cross_scale)
            layer.encoder_attn.out_proj.weight.mul_(cross_scale)
        hf.get_output_embeddings().weight[hf.config.eos_token_id].mul_(eos_scale)
    return hf


def save_varied_model(path, name: str, **config_overrides):
    """Saves the VARIED[name] checkpoint (transformers format) to `path`; returns the hf model."""
    shape, seed, eos_scale = VARIED[name]
    hf = make_varied_hf_model(shape, seed, eos_scale)
    for key, value in config_overrides.items():
        setattr(hf.config, key, value)
    hf.save_pretrained(path)
    return hf


@functools.lru_cache(maxsize=1)
def recording() -> np.ndarray | None:
    """LibriSpeech 1272-128104-0000 at 16 kHz, from ../shared/audio or tests/assets; else None.

    One recording only, so that CI without ../shared sees exactly the features we see here.
    """
    try:
        from s2t_jax.frontend.audio import load_audio
    except ImportError:
        return None
    for folder in AUDIO_DIRS:
        if (folder / AUDIO_NAME).is_file():
            return load_audio(folder / AUDIO_NAME, 16000)
    return None


def audio_segments(seconds=AUDIO_SECONDS) -> list[np.ndarray]:
    """Segments of the given durations cut from the recording at staggered offsets."""
    wave = recording()
    segments = []
    for i, secs in enumerate(seconds):
        size = min(int(16000 * secs), len(wave))
        start = int(16000 * 0.61 * i) % max(1, len(wave) - size)
        segments.append(wave[start : start + size])
    return segments


def speech_features(feat: int, seconds=AUDIO_SECONDS, seed: int = 0):
    """Padded real-audio features [batch, frames, feat] and their int32 mask.

    Falls back to random features of the same lengths when the front end or the audio files
    are missing (a CI without ../shared and without tests/assets).
    """
    try:
        from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor
    except ImportError:
        Speech2TextFeatureExtractor = None
    if Speech2TextFeatureExtractor is not None and recording() is not None:
        extractor = Speech2TextFeatureExtractor(feature_size=feat, num_mel_bins=feat)
        out = extractor(
            audio_segments(seconds), padding=True, return_tensors="np", sampling_rate=16000
        )
        return out["input_features"].astype(np.float32), out["attention_mask"].astype(np.int32)
    lengths = [int(s * 100) - 2 for s in seconds]
    return random_features(len(lengths), max(lengths), feat, seed=seed, lengths=lengths)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """transformers on one thread: with two OpenMP threads on a 2-core machine that others share,
    a tiny model's generate swings between 0.1 s and 6 s (threads spin-waiting on a busy core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def varied(tmp_path_factory):
    """name -> (hf model, our model, dir); built lazily, once per session."""
    built = {}

    def get(name):
        if name not in built:
            path = tmp_path_factory.mktemp(f"varied_{name}")
            hf = save_varied_model(path, name)
            built[name] = (hf, Speech2TextForConditionalGeneration.from_pretrained(path), path)
        return built[name]

    return get


def hf_generate(hf, x, mask, **kwargs):
    """transformers' generate on numpy inputs -> (ids int64 numpy, sequences_scores or None)."""
    with torch.no_grad():
        out = hf.generate(
            input_features=torch.tensor(x),
            attention_mask=None if mask is None else torch.tensor(mask),
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )
    scores = getattr(out, "sequences_scores", None)
    return out.sequences.numpy(), None if scores is None else scores.numpy()


CTC_VOCAB = 12  # small, so the CTC head's prefixes are not all hopeless


@pytest.fixture(scope="module")
def ctc_model():
    """A tiny random model with a random CTC head that, like a trained one, never emits pad or
    eos as labels (tests of CTC decoding)."""
    from s2t_jax import Speech2TextConfig
    from tests.hf_models import TINY

    config = Speech2TextConfig(**dict(TINY, vocab_size=CTC_VOCAB))
    m = Speech2TextForConditionalGeneration(config, seed=3)
    rng = np.random.default_rng(0)
    bias = np.zeros(CTC_VOCAB, np.float32)
    bias[[config.pad_token_id, config.eos_token_id]] = -30.0  # as a trained head: no such labels
    m.ctc_head = {
        "kernel": (2.0 * rng.normal(size=(config.d_model, CTC_VOCAB))).astype(np.float32),
        "bias": bias,
    }
    return m


def ctc_features(batch=2, frames=48, seed=1):
    x = np.random.default_rng(seed).normal(size=(batch, frames, 80)).astype(np.float32)
    mask = np.ones((batch, frames), np.int32)
    mask[1, 36:] = 0  # the second utterance is shorter
    return x, mask
