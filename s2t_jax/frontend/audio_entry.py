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

from s2t_jax.frontend.audio import load_audio, read_sound, resample, validate_waveform

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
    """`length` bytes at `offset` of `path`; the range is checked against the file's size
    first, so a bad entry cannot ask for a buffer larger than the file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if offset < 0 or length < 0 or offset + length > size:
            raise OSError(
                f"{path}: wanted {length} bytes at offset {offset}, the file has {size} bytes"
            )
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise OSError(f"{path}: wanted {length} bytes at offset {offset}, read {len(data)}")
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
            with open(path, "rb") as f:
                return "features", load_npy_features(f, path)
        return "waveform", load_audio(path, sampling_rate)
    offset, length = ptr
    if offset < 0 or length <= 0:
        raise AudioEntryError(f"{audio!r}: offset must be >= 0 and length > 0")
    data = read_bytes(path, offset, length)
    name = f"{path}:{offset}:{length}"
    if data.startswith(NPY_MAGIC):
        return "features", load_npy_features(io.BytesIO(data), name)
    wave, rate = read_sound(io.BytesIO(data), name)  # [samples, channels]
    wave = validate_waveform(wave, name=name, channel_axis=-1)
    return "waveform", resample(wave, rate, sampling_rate, name=name)


def load_npy_features(f, name: str) -> np.ndarray:
    """A .npy of float features [frames, mels] from an open binary file -> float32.

    The header is checked first: its shape and dtype must describe a float matrix whose bytes
    the file really holds, so a damaged header cannot ask numpy for a huge buffer. Raises
    ValueError naming `name` otherwise, or when a value is NaN/inf.
    """
    try:
        start = f.tell()
        version = np.lib.format.read_magic(f)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read_header(f)
        data_start = f.tell()
        f.seek(0, io.SEEK_END)
        available = f.tell() - data_start
        f.seek(start)
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise ValueError(f"{name}: not a readable .npy file ({e})") from e
    if len(shape) != 2 or dtype.kind != "f" or dtype.hasobject:
        raise ValueError(f"{name}: expected float features [frames, mels], got {dtype}{shape}")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > available:
        raise ValueError(
            f"{name}: the .npy header claims {dtype}{shape}, more than the {available} bytes "
            "that follow it (truncated or damaged file)"
        )
    try:
        x = np.load(f, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{name}: not a readable .npy file ({e})") from e
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: features hold NaN or inf")
    return x.astype(np.float32, copy=False)
