"""Kaldi log-mel filterbank features and CMVN for Speech2Text, in vectorised numpy.

Why our own: transformers' numpy path (used whenever torchaudio is absent, as here) walks the
waveform frame by frame in Python; this module works on all frames of all utterances of a batch
at once (chunks of [frames, n_fft] through one rfft, sparse mel bands and log each), about 5-10x
faster (bench/features.py). The numbers are those of `transformers.Speech2TextFeatureExtractor`
and `torchaudio.compliance.kaldi.fbank`:

  waveform x 32768 -> 25 ms frames every 10 ms (snip edges) -> optional dither -> per-frame DC
  removal -> pre-emphasis 0.97 -> Povey window -> |rfft(512)|^2 -> 80 triangular Kaldi-mel bands
  (20 Hz .. Nyquist, triangles in the mel domain) -> log(max(., float32 eps)) -> utterance CMVN.

Deliberate differences from transformers, all at edges where it breaks:
  * CMVN floors the variance at 1e-10 (std = sqrt(max(var, 1e-10))) as fairseq does, so digital
    silence, pure tones and one-frame utterances give finite features instead of NaN;
  * utterances shorter than one frame give zero frames instead of a numpy error;
  * `padding_side="left"` normalises over the real frames (transformers uses the first n rows);
  * frame length / hop / FFT size follow the sampling rate (25 ms / 10 ms / next power of two),
    as in Kaldi, instead of being fixed at 400/160/512 (identical at 16 kHz);
  * `return_attention_mask` from the config is honoured (transformers always forces it on);
  * `return_tensors=None` always gives lists of per-utterance arrays.
Global CMVN from a fairseq `gcmvn.npz` (keys `mean`, `std`) can replace utterance CMVN.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BatchFeature",
    "Speech2TextFeatureExtractor",
    "kaldi_fbank",
    "kaldi_mel_filter_bank",
    "povey_window",
    "utterance_cmvn",
]

logger = logging.getLogger(__name__)

FEATURE_EXTRACTOR_NAME = "preprocessor_config.json"
PROCESSOR_NAME = "processor_config.json"

FRAME_SECONDS = 0.025
HOP_SECONDS = 0.010
PREEMPHASIS = 0.97
LOW_FREQ_HZ = 20.0
INT16_SCALE = 32768.0  # Kaldi reads 16-bit PCM as integers
MEL_FLOOR = float(np.finfo(np.float32).eps)  # torchaudio/Kaldi log floor
VARIANCE_FLOOR = 1e-10  # fairseq's utterance CMVN floor


class BatchFeature(dict):
    """A dict of model inputs with attribute access (`batch.input_features`)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    def convert_to_tensors(self, tensor_type: str | None = None) -> BatchFeature:
        """Stack every list value into one array: `"np"` for numpy, `"jax"` for jax.Array."""
        if tensor_type is None:
            return self
        tensor_type = str(getattr(tensor_type, "value", tensor_type))
        if tensor_type not in ("np", "jax"):
            raise ValueError(f"return_tensors must be None, 'np' or 'jax', got {tensor_type!r}")
        for key, value in self.items():
            try:
                array = value if isinstance(value, np.ndarray) else np.stack(value)
            except ValueError as err:
                raise ValueError(
                    f"Unable to stack '{key}' into one tensor: its items have different lengths. "
                    "Use padding=True, or return_tensors=None for a list of arrays."
                ) from err
            if tensor_type == "jax":
                import jax.numpy as jnp

                array = jnp.asarray(array)
            self[key] = array
        return self


# --------------------------------------------------------------------------------------------
# Kaldi filterbank
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------


def utterance_cmvn(
    features: np.ndarray,
    mask: np.ndarray | None = None,
    normalize_means: bool = True,
    normalize_vars: bool = True,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Utterance-level CMVN (transformers' numbers, NaN-free) of [frames, n_mels] or of a padded
    batch [batch, frames, n_mels] whose valid frames are where `mask` [batch, frames] is 1.

    Statistics come from the valid frames only, accumulated in float64; the variance is about
    the mean and floored as in fairseq, std = sqrt(max(var, 1e-10)), so constant features map to
    0 instead of NaN. Every row is mapped with them (padded rows are the caller's to overwrite).
    `out` (2-D case) receives the float32 result in place.
    """
    if features.ndim != 2:
        if mask is None:
            mask = np.ones(features.shape[:2], np.int32)
        return np.stack(
            [utterance_cmvn(f, m, normalize_means, normalize_vars) for f, m in zip(features, mask)]
        )
    keep = None if mask is None else np.asarray(mask, bool)
    valid = features if keep is None else features[keep]  # [frames', n_mels]
    count = max(valid.shape[0], 1)
    mean = (valid.sum(axis=0, dtype=np.float64) / count).astype(np.float32)  # [n_mels]
    centred = np.subtract(features, mean, out=out, dtype=np.float32)  # [frames, n_mels]
    if not normalize_vars:
        if not normalize_means:
            centred += mean
        return centred
    valid_centred = centred if keep is None else centred[keep]  # [frames', n_mels]
    var = np.square(valid_centred).sum(axis=0, dtype=np.float64) / count  # [n_mels]
    scale = (1.0 / np.sqrt(np.maximum(var, VARIANCE_FLOOR))).astype(np.float32)  # [n_mels]
    if normalize_means:
        centred *= scale
        return centred
    return np.multiply(features, scale, out=centred, dtype=np.float32)


def load_global_cmvn(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a fairseq `gcmvn.npz` (arrays `mean` and `std`, each [n_mels])."""
    with np.load(path) as stats:
        missing = {"mean", "std"} - set(stats.files)
        if missing:
            raise ValueError(f"{path}: global CMVN stats lack {sorted(missing)}")
        return {
            "mean": np.asarray(stats["mean"], np.float64),
            "std": np.asarray(stats["std"], np.float64),
        }


# --------------------------------------------------------------------------------------------
# The feature extractor
# --------------------------------------------------------------------------------------------


def _round_up(n: int, multiple: int | None) -> int:
    if multiple is None or n % multiple == 0:
        return n
    return (n // multiple + 1) * multiple


def _padding_strategy(padding, max_length) -> str:
    value = getattr(padding, "value", padding)
    if value is False or value is None or value == "do_not_pad":
        strategy = "do_not_pad"
    elif value is True or value == "longest":
        strategy = "longest"
    elif value == "max_length":
        strategy = "max_length"
    else:
        raise ValueError(
            f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}"
        )
    if strategy == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length")
    return strategy


class Speech2TextFeatureExtractor:
    """Speech2Text's feature extractor: Kaldi fbank + utterance (or global) CMVN + padding.

    Constructor arguments and config keys match `transformers.Speech2TextFeatureExtractor`;
    `global_cmvn_path` (a fairseq gcmvn.npz) or `global_cmvn` ({"mean": [...], "std": [...]})
    switch utterance CMVN for global CMVN.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 80,
        sampling_rate: int = 16000,
        num_mel_bins: int = 80,
        padding_value: float = 0.0,
        dither: float = 0.0,
        do_ceptral_normalize: bool = True,
        normalize_means: bool = True,
        normalize_vars: bool = True,
        return_attention_mask: bool = True,
        padding_side: str = "right",
        global_cmvn_path: str | os.PathLike | None = None,
        global_cmvn: dict[str, Any] | None = None,
        **kwargs,
    ):
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.feature_size = feature_size
        self.sampling_rate = sampling_rate
        self.num_mel_bins = num_mel_bins
        self.padding_value = padding_value
        self.dither = dither
        self.do_ceptral_normalize = do_ceptral_normalize
        self.normalize_means = normalize_means
        self.normalize_vars = normalize_vars
        self.return_attention_mask = return_attention_mask
        self.padding_side = padding_side
        stats = load_global_cmvn(global_cmvn_path) if global_cmvn_path is not None else global_cmvn
        self.global_cmvn = None
        if stats is not None:
            mean = np.asarray(stats["mean"], np.float64).reshape(-1)  # [n_mels]
            std = np.asarray(stats["std"], np.float64).reshape(-1)  # [n_mels]
            if mean.shape != (num_mel_bins,) or std.shape != (num_mel_bins,):
                raise ValueError(
                    f"global CMVN stats must have {num_mel_bins} values, got mean {mean.shape}, std {std.shape}"
                )
            self.global_cmvn = {"mean": mean, "std": std}
        kwargs.pop("feature_extractor_type", None)
        kwargs.pop("processor_class", None)
        if kwargs:
            logger.debug("Speech2TextFeatureExtractor ignores config keys %s", sorted(kwargs))

    # ---- config -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {
            "dither": self.dither,
            "do_ceptral_normalize": self.do_ceptral_normalize,
            "feature_extractor_type": type(self).__name__,
            "feature_size": self.feature_size,
            "normalize_means": self.normalize_means,
            "normalize_vars": self.normalize_vars,
            "num_mel_bins": self.num_mel_bins,
            "padding_side": self.padding_side,
            "padding_value": self.padding_value,
            "return_attention_mask": self.return_attention_mask,
            "sampling_rate": self.sampling_rate,
        }
        if self.global_cmvn is not None:
            out["global_cmvn"] = {k: v.tolist() for k, v in self.global_cmvn.items()}
        return out

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, config: dict[str, Any], **kwargs) -> Speech2TextFeatureExtractor:
        return cls(**{**config, **kwargs})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> Speech2TextFeatureExtractor:
        """Load from a directory (processor_config.json's `feature_extractor` entry first, else
        preprocessor_config.json, as transformers does) or from a JSON file."""
        path = Path(path)
        if path.is_file():
            config = json.loads(path.read_text(encoding="utf-8"))
            config = config.get("feature_extractor", config)
            return cls.from_dict(config, **kwargs)
        config = None
        processor_file = path / PROCESSOR_NAME
        if processor_file.is_file():
            nested = json.loads(processor_file.read_text(encoding="utf-8"))
            config = nested.get("feature_extractor", nested.get("audio_processor"))
        if config is None and (path / FEATURE_EXTRACTOR_NAME).is_file():
            config = json.loads((path / FEATURE_EXTRACTOR_NAME).read_text(encoding="utf-8"))
        if config is None:
            raise OSError(
                f"{path}: no {FEATURE_EXTRACTOR_NAME}, and no {PROCESSOR_NAME} with a "
                "'feature_extractor' entry"
            )
        return cls.from_dict(config, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write preprocessor_config.json in transformers' format; returns its path."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        config = {**self.to_dict(), "processor_class": "Speech2TextProcessor"}
        out = save_directory / FEATURE_EXTRACTOR_NAME
        out.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return str(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    # ---- featurisation ------------------------------------------------------------------

    @staticmethod
    def _as_waveforms(raw_speech) -> list[np.ndarray]:
        """A single waveform or a batch (list of waveforms / 2-D array) -> list of float32 [samples]."""
        if isinstance(raw_speech, np.ndarray) or hasattr(raw_speech, "__array__"):
            array = np.asarray(raw_speech)
            if array.ndim > 2:
                raise ValueError(
                    f"Only mono-channel audio is supported, got an array of shape {array.shape}"
                )
            if array.ndim == 2:
                return [np.asarray(row, dtype=np.float32) for row in array]
            return [array.astype(np.float32, copy=False)]
        if isinstance(raw_speech, (list, tuple)):
            if len(raw_speech) == 0:
                raise ValueError("raw_speech is an empty list")
            first = raw_speech[0]
            if isinstance(first, (np.ndarray, list, tuple)) or hasattr(first, "__array__"):
                waves = [np.asarray(w, dtype=np.float32) for w in raw_speech]
                for w in waves:
                    if w.ndim != 1:
                        raise ValueError(
                            f"Only mono-channel audio is supported, got a waveform of shape {w.shape}"
                        )
                return waves
            return [np.asarray(raw_speech, dtype=np.float32)]
        raise TypeError(
            f"raw_speech must be an array or a list of arrays, got {type(raw_speech).__name__}"
        )

    def __call__(
        self,
        raw_speech,
        padding: bool | str = False,
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        sampling_rate: int | None = None,
        return_attention_mask: bool | None = None,
    ) -> BatchFeature:
        """Featurise one waveform or a batch; semantics of transformers' extractor.

        Returns `input_features` (list of [frames, n_mels] float32, or [batch, frames, n_mels]
        with return_tensors) and, unless turned off, an int32 frame-level `attention_mask`.
        """
        if sampling_rate is not None:
            if sampling_rate != self.sampling_rate:
                raise ValueError(
                    f"The feature extractor expects audio sampled at {self.sampling_rate} Hz, but "
                    f"raw_speech was sampled at {sampling_rate} Hz. Resample it first "
                    "(s2t_jax.frontend.audio.load_audio does this for files)."
                )
        else:
            logger.warning(
                "Pass sampling_rate to Speech2TextFeatureExtractor() to catch wrongly sampled audio."
            )
        if return_attention_mask is None:
            return_attention_mask = self.return_attention_mask
        strategy = _padding_strategy(padding, max_length)
        if truncation and max_length is None:
            raise ValueError("truncation=True needs max_length")

        waves = self._as_waveforms(raw_speech)
        features = kaldi_fbank(waves, self.sampling_rate, self.num_mel_bins, self.dither)
        if truncation:
            limit = _round_up(max_length, pad_to_multiple_of)
            features = [f[:limit] for f in features]
        lengths = [f.shape[0] for f in features]

        if strategy == "do_not_pad":
            batch = {"input_features": [self._normalise(f) for f in features]}
            if return_attention_mask:
                batch["attention_mask"] = [np.ones(n, dtype=np.int32) for n in lengths]
            return BatchFeature(batch).convert_to_tensors(return_tensors)

        target = max(lengths) if strategy == "longest" else int(max_length)
        target = _round_up(target, pad_to_multiple_of)
        if max(lengths) > target:
            raise ValueError(
                f"An utterance has {max(lengths)} frames, more than max_length={target}; "
                "pass truncation=True to cut it."
            )
        padded = np.full((len(features), target, self.num_mel_bins), self.padding_value, np.float32)
        mask = np.zeros((len(features), target), np.int32)  # [batch, frames]
        for i, f in enumerate(features):
            n = f.shape[0]
            rows = slice(0, n) if self.padding_side == "right" else slice(target - n, target)
            self._normalise(f, out=padded[i, rows])  # [frames_i, n_mels]
            mask[i, rows] = 1
        if return_tensors is None:
            batch = {"input_features": list(padded), "attention_mask": list(mask)}
        else:
            batch = {"input_features": padded, "attention_mask": mask}
        if not return_attention_mask:
            del batch["attention_mask"]
        return BatchFeature(batch).convert_to_tensors(return_tensors)

    def _normalise(self, features: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Global or utterance CMVN of one utterance's [frames, n_mels] features (into `out`)."""
        if self.global_cmvn is not None:
            mean = self.global_cmvn["mean"].astype(np.float32)  # [n_mels]
            std = np.maximum(self.global_cmvn["std"], np.sqrt(VARIANCE_FLOOR))  # [n_mels]
            centred = np.subtract(features, mean, out=out, dtype=np.float32)
            centred *= (1.0 / std).astype(np.float32)
            return centred
        if self.do_ceptral_normalize:
            return utterance_cmvn(
                features, None, self.normalize_means, self.normalize_vars, out=out
            )
        if out is None:
            return np.array(features, dtype=np.float32)
        out[:] = features
        return out
