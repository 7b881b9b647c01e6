"""fairseq S2T manifests: TSV files of utterances, and the `audio` column's three kinds of paths.

A manifest is what fairseq's prep scripts write: a tab-separated file with a header row and no
quoting, columns `id, audio, n_frames, tgt_text, speaker` plus optional `src_text, src_lang,
tgt_lang`. We read them unchanged, so a fairseq data root trains here as it is.

The `audio` column holds one of
  * `path.npy`                 pre-computed fbank features [frames, mels] (raw, before CMVN);
  * `path.wav|flac|ogg|...`    a sound file; features are computed from it on the fly;
  * `path.zip:offset:length`   a member of an uncompressed zip (fairseq's `fbank80.zip`): `length`
                               bytes at byte `offset` of the zip file hold a .npy (or sound) file.
Relative paths are joined to the audio root (the data config's `audio_root`, else the directory
the manifest sits in), as fairseq joins them to `audio_root`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import zipfile
from collections.abc import Iterable, Sequence

import numpy as np

REQUIRED_COLUMNS = ("id", "audio", "n_frames", "tgt_text")
OPTIONAL_COLUMNS = ("speaker", "src_text", "src_lang", "tgt_lang")
SOUND_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".opus")
NPY_MAGIC = b"\x93NUMPY"
# fairseq writes manifests with csv.QUOTE_NONE; texts may contain quotes, so we must not unquote.
_TSV = dict(delimiter="\t", quotechar=None, doublequote=False, quoting=csv.QUOTE_NONE)


class ManifestError(ValueError):
    """A manifest that cannot be read: missing columns, bad rows. The message names the line."""


@dataclasses.dataclass(frozen=True)
class Utterance:
    id: str
    audio: str  # as written in the manifest
    n_frames: int
    tgt_text: str
    speaker: str = ""
    src_text: str = ""
    src_lang: str = ""
    tgt_lang: str = ""


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """Reads one fairseq TSV manifest. Raises ManifestError naming the file and line."""
    path = os.fspath(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, **_TSV)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ManifestError(f"{path}: header {header} lacks columns {missing}")
        rows = []
        for line_no, row in enumerate(reader, start=2):
            if None in row or any(row.get(c) is None for c in REQUIRED_COLUMNS):
                raise ManifestError(f"{path}:{line_no}: wrong number of tab-separated fields")
            try:
                n_frames = int(row["n_frames"])
            except ValueError as e:
                raise ManifestError(f"{path}:{line_no}: n_frames {row['n_frames']!r}") from e
            rows.append(
                Utterance(
                    id=row["id"],
                    audio=row["audio"],
                    n_frames=n_frames,
                    tgt_text=row["tgt_text"],
                    **{c: row.get(c) or "" for c in OPTIONAL_COLUMNS},
                )
            )
    return rows


def write_manifest(
    path: str | os.PathLike, utterances: Iterable[Utterance], columns: Sequence[str] | None = None
) -> None:
    """Writes a manifest fairseq reads (tab-separated, header, no quoting)."""
    utterances = list(utterances)
    if columns is None:
        columns = list(REQUIRED_COLUMNS) + ["speaker"]
        columns += [c for c in OPTIONAL_COLUMNS[1:] if any(getattr(u, c) for u in utterances)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n", **_TSV)
        writer.writerow(columns)
        for u in utterances:
            values = [str(getattr(u, c)) for c in columns]
            if any("\t" in v or "\n" in v for v in values):
                raise ManifestError(f"utterance {u.id}: a field holds a tab or newline")
            writer.writerow(values)


# --------------------------------------------------------------------------------------------
# The audio column
# --------------------------------------------------------------------------------------------


def resolve(audio: str, root: str | os.PathLike) -> str:
    """Joins a relative path (or the file part of `zip:offset:length`) to `root`."""
    return audio if os.path.isabs(audio) else os.path.join(os.fspath(root), audio)


def parse_audio_path(audio: str) -> tuple[str, tuple[int, ...]]:
    """'a.zip:10:20' -> ('a.zip', (10, 20)); 'a.npy' -> ('a.npy', ()). As fairseq's parse_path."""
    if os.path.splitext(audio)[1].lower() in (".npy",) + SOUND_EXTENSIONS:
        return audio, ()
    path, *ptr = audio.split(":")
    if len(ptr) not in (0, 2):
        raise ManifestError(f"{audio!r}: expected a file path or 'file.zip:offset:length'")
    try:
        return path, tuple(int(p) for p in ptr)
    except ValueError as e:
        raise ManifestError(f"{audio!r}: offset and length must be integers") from e


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
    from s2t_jax.frontend.audio import AudioError, load_audio, resample, validate_waveform

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
    import soundfile

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


# --------------------------------------------------------------------------------------------
# Zips of .npy features, as fairseq's prep scripts pack them
# --------------------------------------------------------------------------------------------


def create_zip(zip_path: str | os.PathLike, files: Iterable[str | os.PathLike]) -> None:
    """Packs files uncompressed (ZIP_STORED), so each member is a byte range of the zip."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_STORED) as z:
        for f in files:
            z.write(f, arcname=os.path.basename(f))


def zip_manifest(zip_path: str | os.PathLike) -> dict[str, tuple[str, int]]:
    """member stem -> ('zip_path:offset:length', frames) for every .npy member of `zip_path`.

    The offset is that of the member's data: after its local header (30 bytes + name + extra).
    """
    zip_path = os.fspath(zip_path)
    out = {}
    with zipfile.ZipFile(zip_path) as z, open(zip_path, "rb") as f:
        for info in z.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"{zip_path}: member {info.filename} is compressed")
            f.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(f.read(4), "<u2")
            offset = info.header_offset + 30 + int(name_len) + int(extra_len)
            data = read_bytes(zip_path, offset, info.file_size)
            stem = os.path.splitext(os.path.basename(info.filename))[0]
            frames = np.load(io.BytesIO(data)).shape[0] if data.startswith(NPY_MAGIC) else 0
            out[stem] = (f"{zip_path}:{offset}:{info.file_size}", int(frames))
    return out
