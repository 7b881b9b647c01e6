"""A manifest's `audio` entry -> raw features or a waveform: the three kinds of entry.

fairseq's manifests name an utterance's audio as
  * `path.npy`                 pre-computed fbank features [frames, mels] (raw, before CMVN);
  * `path.wav|flac|ogg|...`    a sound file, decoded and resampled by `audio.load_audio`;
  * `path.zip:offset:length`   `length` bytes at byte `offset` of an uncompressed zip (fairseq's
                               `fbank80.zip`), holding a .npy (or sound) file.
Relative paths are joined to an audio root. Reading them is the first step of the one audio ->
features path (`featurize.Featurizer`), so it lives in the front end; `data/manifest.py` only
reads and writes the TSV files and indexes the zips.
"""

from __future__ import annotations

import io
import os

import numpy as np
import soundfile

from s2t_jax.frontend.audio import AudioError, load_audio, resample, validate_waveform

SOUND_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")
NPY_MAGIC = b"\x93NUMPY"


class AudioEntryError(ValueError):
    """An `audio` entry that is neither a file path nor `file.zip:offset:length`."""


def resolve(audio: str, root: str | os.PathLike) -> str:
    """Joins a relative path (or the file part of `zip:offset:length`) to `root`."""
    return audio if os.path.isabs(audio) else os.path.join(os.fspath(root), audio)


def parse_audio_path(audio: str) -> tuple[str, tuple[int, ...]]:
    """'a.zip:10:20' -> ('a.zip', (10, 20)); 'a.npy' -> ('a.npy', ()). As fairseq's parse_path."""
    if os.path.splitext(audio)[1].lower() in (".npy",) + SOUND_EXTENSIONS:
        return audio, ()
    path, *ptr = audio.split(":")
    if len(ptr) not in (0, 2):
        raise AudioEntryError(f"{audio!r}: expected a file path or 'file.zip:offset:length'")
    try:
        return path, tuple(int(p) for p in ptr)
    except ValueError as e:
        raise AudioEntryError(f"{audio!r}: offset and length must be integers") from e


def read_bytes(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise OSError(f"{path}: wanted {length} bytes at offset {offset}, file has fewer")
    return data


def load_features_or_waveform(
    audio: str, root: str | os.PathLike = "", sampling_rate: int = 16000
) -> tuple[str, np.ndarray]:
    """-> ("features", float32 [frames, mels]) or ("waveform", float32 [samples]).

    Raises OSError/ValueError (AudioError for sound files) naming the file when unreadable.
    """
    path, ptr = parse_audio_path(audio)
    path = resolve(path, root)
    if not ptr:
        if path.lower().endswith(".npy"):
            return "features", _check_features(np.load(path, allow_pickle=False), path)
        return "waveform", load_audio(path, sampling_rate)
    data = read_bytes(path, *ptr)
    name = f"{path}:{ptr[0]}:{ptr[1]}"
    if data.startswith(NPY_MAGIC):
        return "features", _check_features(np.load(io.BytesIO(data), allow_pickle=False), name)
    try:
        wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioError(f"{name}: neither .npy nor decodable audio ({e})") from e
    wave = validate_waveform(wave, name=name, channel_axis=-1)
    return "waveform", resample(wave, rate, sampling_rate, name=name)


def _check_features(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name}: expected float features [frames, mels], got {x.dtype}{x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: features hold NaN or inf")
    return x.astype(np.float32, copy=False)
