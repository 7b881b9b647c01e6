"""The Kaldi fbank kernel: mel bank and window, raw log-mel parity with transformers, dither,
threads, chunking and forked workers, other sampling rates."""

import numpy as np
import pytest

from s2t_jax.frontend import fbank
from s2t_jax.frontend.fbank import kaldi_fbank, kaldi_mel_filter_bank, num_frames, povey_window
from tests.frontend.signals import SR, assert_raw_close, synthetic


def test_mel_bank_and_window_match_transformers(quiet_transformers):
    from transformers.audio_utils import mel_filter_bank, window_function

    # 257 FFT bins, 80 bands from 20 Hz to Nyquist, Kaldi's mel scale and triangles.
    kaldi = dict(norm=None, mel_scale="kaldi", triangularize_in_mel_space=True)
    want = mel_filter_bank(257, 80, 20, SR // 2, SR, **kaldi)
    np.testing.assert_allclose(kaldi_mel_filter_bank(80, 512, SR), want, atol=1e-12)
    np.testing.assert_allclose(povey_window(400), window_function(400, "povey", periodic=False))


@pytest.mark.parametrize("name", list(synthetic()))
def test_synthetic_raw_parity(ref_raw, name):
    wave = synthetic()[name]
    assert_raw_close(kaldi_fbank([wave])[0], ref_raw(wave, sampling_rate=SR)["input_features"][0])


def test_threads_and_chunking_do_not_change_numbers(monkeypatch, mixed_batch):
    threaded = kaldi_fbank(mixed_batch)
    monkeypatch.setattr(fbank, "USE_THREADS", False)
    monkeypatch.setattr(fbank, "CHUNK_FRAMES", 37)
    sequential = kaldi_fbank(mixed_batch)
    for a, b in zip(threaded, sequential):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6)  # BLAS blocking may move the last bit


def test_dither(ref_raw, speech_waves):
    wave = speech_waves["libri"][: 3 * SR]
    np.random.seed(3)
    a = kaldi_fbank([wave], dither=1e-3)[0]
    np.random.seed(3)
    b = kaldi_fbank([wave], dither=1e-3)[0]
    np.testing.assert_array_equal(a, b)  # reproducible under np.random.seed
    c = kaldi_fbank([wave], dither=1e-3)[0]
    assert not np.array_equal(a, c)
    # A dither far below the 16-bit step barely moves speech features.
    want = ref_raw(wave, sampling_rate=SR)["input_features"][0]
    np.testing.assert_allclose(a, want, rtol=1e-3, atol=1e-3)
    # A real dither lifts digital silence off the log floor.
    silence = kaldi_fbank([np.zeros(SR, np.float32)], dither=1.0)[0]
    assert silence.min() > np.log(np.finfo(np.float32).eps)


def _frames_in_child(wave):
    return kaldi_fbank([wave])[0].shape


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_thread_pool_survives_fork(mixed_batch):
    """Data-loader workers are forked after the parent has used the pool; they must not hang."""
    import multiprocessing

    kaldi_fbank(mixed_batch)  # parent's pool exists now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        shape = pool.apply_async(_frames_in_child, (mixed_batch[2],)).get(timeout=60)
    assert shape == (len(mixed_batch[2]) // 160 - 1, 80)


def test_shorter_than_a_frame_gives_no_frames():
    assert [f.shape for f in kaldi_fbank([np.zeros(100), np.zeros(399)])] == [(0, 80), (0, 80)]
    assert (num_frames(399), num_frames(400), num_frames(559), num_frames(560)) == (0, 1, 1, 2)


def test_other_sampling_rate_uses_kaldi_framing():
    """25 ms / 10 ms frames and a 256-point FFT at 8 kHz (transformers' numpy path keeps 400/160)."""
    wave = (0.1 * np.random.default_rng(2).standard_normal(8000)).astype(np.float32)
    out = kaldi_fbank([wave], sampling_rate=8000)[0]
    assert out.shape == (1 + (8000 - 200) // 80, 80) and np.isfinite(out).all()
    assert num_frames(8000, 8000) == out.shape[0]
