"""Kaldi log-mel filterbanks for Speech2Text, in vectorised numpy.

Why our own: transformers' numpy path (used whenever torchaudio is absent, as here) walks the
waveform frame by frame in Python; this module works on all frames of all utterances of a batch
at once (chunks of [frames, n_fft] through one rfft, sparse mel bands and log each), about 5-10x
faster (bench/features.py). The numbers are those of `transformers.Speech2TextFeatureExtractor`
and `torchaudio.compliance.kaldi.fbank`:

  waveform x 32768 -> 25 ms frames every 10 ms (snip edges) -> optional dither -> per-frame DC
  removal -> pre-emphasis 0.97 -> Povey window -> |rfft(512)|^2 -> 80 triangular Kaldi-mel bands
  (20 Hz .. Nyquist, triangles in the mel domain) -> log(max(., float32 eps)).

Normalisation (CMVN) comes after, in `cmvn.py`. Deliberate differences from transformers here:
  * utterances shorter than one frame give zero frames instead of a numpy error;
  * frame length / hop / FFT size follow the sampling rate (25 ms / 10 ms / next power of two),
    as in Kaldi, instead of being fixed at 400/160/512 (identical at 16 kHz).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["kaldi_fbank", "kaldi_mel_filter_bank", "num_frames", "povey_window"]

FRAME_SECONDS = 0.025
HOP_SECONDS = 0.010
PREEMPHASIS = 0.97
LOW_FREQ_HZ = 20.0
INT16_SCALE = 32768.0  # Kaldi reads 16-bit PCM as integers
MEL_FLOOR = float(np.finfo(np.float32).eps)  # torchaudio/Kaldi log floor


def povey_window(length: int) -> np.ndarray:
    """Kaldi's Povey window: a Hann window (symmetric) raised to 0.85. [length] float64."""
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / (length - 1))) ** 0.85


def _kaldi_mel(freq):
    return 1127.0 * np.log(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def kaldi_mel_filter_bank(
    num_mel_bins: int,
    n_fft: int,
    sampling_rate: int,
    low_freq: float = LOW_FREQ_HZ,
    high_freq: float | None = None,
) -> np.ndarray:
    """Triangular filters, equally spaced and triangular on the Kaldi mel scale.

    Returns [n_fft // 2 + 1, num_mel_bins] float64 (the Nyquist row is zero, as in Kaldi).
    """
    high_freq = sampling_rate / 2.0 if high_freq is None else high_freq
    edges = np.linspace(_kaldi_mel(low_freq), _kaldi_mel(high_freq), num_mel_bins + 2)  # [M + 2]
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]  # [M] each
    bin_mel = _kaldi_mel(np.arange(n_fft // 2 + 1) * (sampling_rate / n_fft))[:, None]  # [F, 1]
    up = (bin_mel - left) / (centre - left)  # [F, M]
    down = (right - bin_mel) / (right - centre)  # [F, M]
    return np.maximum(0.0, np.minimum(up, down))  # [F, M]


@dataclass(frozen=True)
class _FbankSetup:
    frame_length: int
    hop_length: int
    n_fft: int
    window: np.ndarray  # [frame_length] float64
    scaled_window: np.ndarray  # [frame_length] float64, window x 32768
    mel_filters: np.ndarray  # [n_fft // 2 + 1, num_mel_bins] float32
    mel_sparse_t: Any  # scipy.sparse CSR [num_mel_bins, n_fft // 2 + 1]: <= 2 bands per bin


@functools.lru_cache(maxsize=16)
def _fbank_setup(sampling_rate: int, num_mel_bins: int) -> _FbankSetup:
    frame_length = int(round(sampling_rate * FRAME_SECONDS))
    hop_length = int(round(sampling_rate * HOP_SECONDS))
    n_fft = 1 << (frame_length - 1).bit_length()
    mel = kaldi_mel_filter_bank(num_mel_bins, n_fft, sampling_rate).astype(np.float32)
    window = povey_window(frame_length)
    scaled = window * INT16_SCALE
    for array in (window, scaled, mel):
        array.setflags(write=False)
    import scipy.sparse

    sparse_t = scipy.sparse.csr_matrix(mel.T)
    return _FbankSetup(frame_length, hop_length, n_fft, window, scaled, mel, sparse_t)


def num_frames(num_samples: int, sampling_rate: int = 16000) -> int:
    """Frames Kaldi cuts from `num_samples` with snip_edges=True (0 if shorter than one frame)."""
    setup = _fbank_setup(int(sampling_rate), 1)
    if num_samples < setup.frame_length:
        return 0
    return 1 + (num_samples - setup.frame_length) // setup.hop_length


CHUNK_FRAMES = 256  # frames per work item; its float64 FFT buffer is 1 MiB
# Chunks run on this many threads; S2T_FBANK_THREADS=1 turns the pool off (e.g. in data-loader
# worker processes that already use every core).
FBANK_THREADS = int(os.environ.get("S2T_FBANK_THREADS", min(os.cpu_count() or 1, 8)))
USE_THREADS = FBANK_THREADS > 1


_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool() -> ThreadPoolExecutor:
    """The process's frame-chunk pool; a forked child (data-loader worker) makes its own,
    since the parent's threads do not exist there."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        pool = ThreadPoolExecutor(max_workers=max(FBANK_THREADS, 1), thread_name_prefix="fbank")
        _POOL = (os.getpid(), pool)
    return _POOL[1]


_scratch = threading.local()


def _scratch_buffers(rows: int, n_fft: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-thread buffers: FFT input [rows, n_fft] float64, its rfft [rows, F] complex128 and
    the power spectrum [rows, F] float32.

    Reused across chunks and calls: fresh multi-MiB arrays per chunk cost more in page faults
    than the FFT itself. Only [:, :frame_length] of the input is ever written, so its tail
    stays zero and pads each frame to n_fft for free.
    """
    frames = getattr(_scratch, "frames", None)
    if frames is None or frames.shape[1] != n_fft or frames.shape[0] < rows:
        size = max(rows, CHUNK_FRAMES)
        frames = np.zeros((size, n_fft), np.float64)
        _scratch.frames = frames
        _scratch.spectrum = np.empty((size, n_fft // 2 + 1), np.complex128)
        _scratch.power = np.empty((size, n_fft // 2 + 1), np.float32)
    return frames[:rows], _scratch.spectrum[:rows], _scratch.power[:rows]


@dataclass
class _Utterance:
    """Sample-level pre-computation for one waveform: O(samples) work, none per frame.

    Values are in [-1, 1] units; the 16-bit scale is folded into the window (a power of two,
    so the result is bit-identical to scaling the waveform first).
    """

    frames: np.ndarray  # [frames, frame_length] strided view of the float64 source signal:
    # its whole-signal pre-emphasis (no dither), or the signal itself (dither)
    dc_terms: np.ndarray | None  # [frames, 1] (1 - a) x frame mean (no-dither path)
    first: np.ndarray | None  # [frames] frame's first sample after DC removal + pre-emphasis


def _prepare(wave: np.ndarray, count: int, setup: _FbankSetup, dither: float) -> _Utterance:
    length, hop = setup.frame_length, setup.hop_length
    if dither != 0.0:
        return _Utterance(_frame_view(wave.astype(np.float64), count, setup), None, None)
    starts = hop * np.arange(count)  # [frames]
    # Frame means from block sums: frames and hops are whole numbers of gcd(length, hop) blocks.
    block = math.gcd(length, hop)
    n_blocks = (hop * (count - 1) + length) // block
    sums = wave[: n_blocks * block].reshape(n_blocks, block).sum(axis=1, dtype=np.float64)
    csum = np.concatenate(([0.0], np.cumsum(sums)))  # [blocks + 1]
    first_block = starts // block  # [frames]
    means = (csum[first_block + length // block] - csum[first_block]) / length  # [frames]
    # Per frame, pre-emphasis of (x - m) is e[n] - (1 - a) m for n >= 1, where e is the
    # pre-emphasis of the whole waveform: e is computed once, not once per overlapping frame.
    emph = np.empty(wave.shape[0], np.float64)  # [samples]
    np.multiply(wave[:-1], -PREEMPHASIS, out=emph[1:], dtype=np.float64)
    np.add(emph[1:], wave[1:], out=emph[1:])
    emph[0] = wave[0]
    first = (1.0 - PREEMPHASIS) * (wave[starts] - means)  # [frames]
    return _Utterance(_frame_view(emph, count, setup), (1.0 - PREEMPHASIS) * means[:, None], first)


def _frame_view(signal: np.ndarray, count: int, setup: _FbankSetup) -> np.ndarray:
    """[count, frame_length] read-only strided view: row t is signal[t * hop : t * hop + L]."""
    step = signal.strides[0]
    return np.lib.stride_tricks.as_strided(
        signal, (count, setup.frame_length), (setup.hop_length * step, step), writeable=False
    )


def _fbank_chunk(
    utt: _Utterance, frame0: int, n: int, setup: _FbankSetup, dither: float, out: np.ndarray
) -> None:
    """Log-mel of frames [frame0, frame0 + n) of one utterance into `out` [n, n_mels] float32."""
    length = setup.frame_length
    view = utt.frames[frame0 : frame0 + n]  # [n, L]
    buf, spectrum, power = _scratch_buffers(n, setup.n_fft)  # [n, n_fft], [n, F], [n, F]
    frames = buf[:, :length]  # [n, L]
    if dither == 0.0:
        np.subtract(view, utt.dc_terms[frame0 : frame0 + n], out=frames)  # [n, L]
        if setup.window[0] != 0.0:  # the Povey window is 0 there, so this is usually moot
            frames[:, 0] = utt.first[frame0 : frame0 + n]
    else:
        noise = (dither / INT16_SCALE) * np.random.standard_normal((n, length))  # [n, L]
        np.add(view, noise, out=frames)
        frames -= frames.mean(axis=1, keepdims=True)
        frames[:, 1:] -= PREEMPHASIS * frames[:, :-1].copy()
        frames[:, 0] *= 1.0 - PREEMPHASIS
    frames *= setup.scaled_window  # [n, L]
    np.fft.rfft(buf, axis=-1, out=spectrum)  # [n, F] complex128
    parts = spectrum.view(np.float64)  # [n, 2F] interleaved re, im
    np.square(parts, out=parts)
    np.add(parts[:, 0::2], parts[:, 1::2], out=power, casting="same_kind")  # [n, F]
    # Sparse, not a BLAS matmul: each bin feeds at most two bands (a quarter of the work),
    # and OpenBLAS's worker threads, once woken, spin on the cores our chunks need.
    out[:] = (setup.mel_sparse_t @ power.T).T  # [n, n_mels]
    np.maximum(out, MEL_FLOOR, out=out)
    np.log(out, out=out)


def kaldi_fbank(
    waveforms: list[np.ndarray],
    sampling_rate: int = 16000,
    num_mel_bins: int = 80,
    dither: float = 0.0,
) -> list[np.ndarray]:
    """Log-mel filterbanks of a batch of mono waveforms in [-1, 1].

    Returns one float32 [frames_i, num_mel_bins] array per waveform (views into one array).
    Per-sample work (pre-emphasis, frame means) is done once per waveform; the frames of all
    utterances are then cut into chunks of CHUNK_FRAMES, each taken through framing, window,
    rfft, power, mel bands and log with whole-array operations (no Python loop over frames).
    Chunks run on a thread pool, as numpy releases the GIL. Frames and the FFT are float64: a
    float32 FFT's rounding floor sits above the quiet bands of real speech (1e-2 log error on
    jfk.flac); power, mel bands and log are float32. Dither, when on, draws from numpy's
    global generator (as transformers does) and runs in order, so `np.random.seed` reproduces
    it.
    """
    setup = _fbank_setup(int(sampling_rate), int(num_mel_bins))
    waves = [np.asarray(w, dtype=np.float32).reshape(-1) for w in waveforms]
    counts = [num_frames(w.shape[0], sampling_rate) for w in waves]
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)  # [batch + 1]
    mel = np.empty((int(offsets[-1]), setup.mel_filters.shape[1]), np.float32)  # [all frames, M]
    jobs = []
    for wave, count, offset in zip(waves, counts, offsets):
        if count == 0:
            continue
        utt = _prepare(wave, count, setup, dither)
        for frame0 in range(0, count, CHUNK_FRAMES):
            n = min(CHUNK_FRAMES, count - frame0)
            jobs.append((utt, frame0, n, mel[offset + frame0 : offset + frame0 + n]))
    if dither != 0.0 or len(jobs) < 2 or not USE_THREADS:
        for utt, frame0, n, rows in jobs:
            _fbank_chunk(utt, frame0, n, setup, dither, rows)
    else:
        list(_pool().map(lambda job: _fbank_chunk(*job[:3], setup, dither, job[3]), jobs))
    return [mel[offsets[i] : offsets[i + 1]] for i in range(len(waves))]
