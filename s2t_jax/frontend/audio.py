"""Read audio files into the 16 kHz mono float32 waveforms Speech2Text expects.

Why this module: the feature extractor only accepts mono waveforms already at the model's rate,
and real data arrives as 24/44.1/48 kHz, stereo, 16/24-bit, WAV/FLAC/OGG/MP3. Decoding goes
through soundfile (libsndfile: WAV, FLAC, OGG/Vorbis/Opus and, with libsndfile >= 1.1, MP3),
channels are averaged, and resampling uses soxr at its "VHQ" setting. soxr is chosen over
scipy/librosa resamplers because it is well kept, fast (C, SIMD), and its very-high-quality
filter has a flat passband and > 140 dB stop-band rejection, so the 80 mel bands up to 8 kHz are
not coloured by the resampler.

Every failure raises `AudioError` (a `ValueError`) naming the file and what is wrong with it,
so a bad line in a manifest is found at once instead of surfacing as NaN losses later.

Limits, checked on the file's header before any sample buffer is allocated (a header can claim
anything; a FLAC claiming 2**33 samples or a WAV claiming a 1 Hz rate must not turn into a
multi-GB allocation): the duration is at most `max_seconds` (default `MAX_SECONDS`, two hours,
or the `S2T_JAX_MAX_AUDIO_SECONDS` environment variable), and the file's rate lies in
[`MIN_RATE`, `MAX_RATE`] Hz.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile
import soxr

__all__ = ["AudioError", "load_audio", "read_sound", "validate_waveform", "duration_limit"]

RESAMPLE_QUALITY = "VHQ"
MAX_SECONDS = 7200.0  # two hours: 460 MB of float32 at 16 kHz
MIN_RATE, MAX_RATE = 1000, 768000  # Hz; outside this a header is damaged, not speech
MAX_CHANNELS = 64
_MAX_SECONDS_ENV = "S2T_JAX_MAX_AUDIO_SECONDS"
_READ_ERRORS = (soundfile.SoundFileError, RuntimeError, TypeError, ValueError, EOFError)


class AudioError(ValueError):
    """An audio file or array that cannot be turned into a mono waveform."""


def duration_limit() -> float:
    """The longest audio accepted: `S2T_JAX_MAX_AUDIO_SECONDS` when set, else `MAX_SECONDS`."""
    value = os.environ.get(_MAX_SECONDS_ENV)
    if value is None:
        return MAX_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise AudioError(f"{_MAX_SECONDS_ENV}={value!r}: expected a positive number of seconds")
    return seconds


def read_sound(source, name: str, limit: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a sound file (a path or a file object) -> (float32 [samples, channels], rate).

    The header's rate, channels and duration are checked before the samples are read, so a
    damaged or hostile header cannot allocate more than `limit` seconds (default
    `duration_limit()`) of audio.
    """
    limit = duration_limit() if limit is None else limit
    try:
        with soundfile.SoundFile(source) as f:
            rate, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
            if not MIN_RATE <= rate <= MAX_RATE:
                raise AudioError(
                    f"{name}: sampling rate {rate} Hz in the header, expected "
                    f"{MIN_RATE}..{MAX_RATE} Hz (damaged header?)"
                )
            if not 1 <= channels <= MAX_CHANNELS:
                raise AudioError(f"{name}: {channels} channels, expected 1..{MAX_CHANNELS}")
            if frames / rate > limit:
                raise AudioError(
                    f"{name}: {frames / rate:.1f} s of audio, longer than the {limit:g} s limit "
                    f"(set {_MAX_SECONDS_ENV} or max_seconds to allow more; cut long "
                    "recordings into segments)"
                )
            data = f.read(dtype="float32", always_2d=True)  # [samples, channels]
    except AudioError:
        raise
    except _READ_ERRORS as err:
        raise AudioError(f"{name}: unreadable or corrupt audio file ({err})") from err
    return data, rate


def load_audio(
    path: str | os.PathLike, sampling_rate: int = 16000, max_seconds: float | None = None
) -> np.ndarray:
    """Decode `path`, down-mix to mono and resample to `sampling_rate`.

    Returns a contiguous float32 array of shape [samples] with values in [-1, 1] for PCM input.
    Raises `AudioError` when the file is missing, not decodable, empty, holds NaN/inf, or is
    longer than `max_seconds` (default: `duration_limit()`).
    """
    path = Path(path)
    if sampling_rate <= 0:
        raise AudioError(f"{path}: target sampling_rate must be positive, got {sampling_rate}")
    if not path.exists():
        raise AudioError(f"{path}: no such audio file")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    data, file_rate = read_sound(path, str(path), max_seconds)  # [samples, channels]
    waveform = validate_waveform(data, name=str(path), channel_axis=-1)  # [samples]
    return resample(waveform, file_rate, sampling_rate, name=str(path))


def validate_waveform(array, name: str = "<array>", channel_axis: int | None = None) -> np.ndarray:
    """Check an in-memory waveform the way `load_audio` checks a file; return it as mono float32.

    Accepts a 1-D array of samples, or a 2-D array when `channel_axis` says which axis holds the
    channels (soundfile's layout is `channel_axis=-1`); channels are averaged. Integer PCM is
    scaled to [-1, 1). Raises `AudioError` naming `name` for an empty array, a non-numeric or
    complex dtype, an unsupported shape, or any NaN/inf sample.
    """
    x = np.asarray(array)
    if x.dtype == np.bool_ or not (
        np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
    ):
        raise AudioError(f"{name}: audio samples must be real numbers, got dtype {x.dtype}")
    if x.ndim == 2 and channel_axis is not None:
        x = np.moveaxis(x, channel_axis, -1)  # [samples, channels]
        if x.shape[1] == 0:
            raise AudioError(f"{name}: audio has no channels (shape {x.shape})")
    elif x.ndim != 1:
        hint = " (pass channel_axis to down-mix a 2-D array)" if x.ndim == 2 else ""
        raise AudioError(
            f"{name}: unsupported audio array shape {x.shape}; expected [samples]{hint}"
        )
    if x.shape[0] == 0:
        raise AudioError(f"{name}: audio has zero length")
    if np.issubdtype(x.dtype, np.integer):
        full_scale = float(-np.iinfo(x.dtype).min) if np.iinfo(x.dtype).min < 0 else None
        if full_scale is None:  # unsigned PCM is centred on half scale
            half = float(np.iinfo(x.dtype).max + 1) / 2.0
            x = (x.astype(np.float64) - half) / half
        else:
            x = x.astype(np.float64) / full_scale
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float64) if x.shape[1] > 1 else x[:, 0]  # [samples]
    x = np.ascontiguousarray(x, dtype=np.float32)  # [samples]
    if not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise AudioError(f"{name}: audio holds {bad} NaN/inf sample(s)")
    return x


def resample(
    waveform: np.ndarray, orig_rate: int, target_rate: int, name: str = "<array>"
) -> np.ndarray:
    """Resample a mono float32 waveform with soxr (VHQ). A no-op when the rates already match."""
    if orig_rate <= 0 or target_rate <= 0:
        raise AudioError(
            f"{name}: sampling rates must be positive, got {orig_rate} -> {target_rate}"
        )
    if orig_rate == target_rate:
        return waveform
    out = soxr.resample(waveform, orig_rate, target_rate, quality=RESAMPLE_QUALITY)  # [samples']
    if out.shape[0] == 0:
        raise AudioError(
            f"{name}: audio too short to resample from {orig_rate} Hz to {target_rate} Hz"
        )
    return np.ascontiguousarray(out, dtype=np.float32)
