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
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile
import soxr

__all__ = ["AudioError", "load_audio", "validate_waveform"]

RESAMPLE_QUALITY = "VHQ"


class AudioError(ValueError):
    """An audio file or array that cannot be turned into a mono waveform."""


def load_audio(path: str | os.PathLike, sampling_rate: int = 16000) -> np.ndarray:
    """Decode `path`, down-mix to mono and resample to `sampling_rate`.

    Returns a contiguous float32 array of shape [samples] with values in [-1, 1] for PCM input.
    Raises `AudioError` when the file is missing, not decodable, empty, or holds NaN/inf.
    """
    path = Path(path)
    if sampling_rate <= 0:
        raise AudioError(f"{path}: target sampling_rate must be positive, got {sampling_rate}")
    if not path.exists():
        raise AudioError(f"{path}: no such audio file")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    try:
        data, file_rate = soundfile.read(
            path, dtype="float32", always_2d=True
        )  # [samples, channels]
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"{path}: unreadable or corrupt audio file ({err})") from err
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
