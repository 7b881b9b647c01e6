"""fairseq S2T manifests: TSV files of utterances, and zips of their .npy features.

A manifest is what fairseq's prep scripts write: a tab-separated file with a header row and no
quoting, columns `id, audio, n_frames, tgt_text, speaker` plus optional `src_text, src_lang,
tgt_lang`. We read them unchanged, so a fairseq data root trains here as it is.

The `audio` column holds a `.npy`, a sound file or a `zip:offset:length` member (see
s2t_jax/frontend/audio_entry.py, which reads them); relative paths are joined to the audio root
(the data config's `audio_root`, else the directory the manifest sits in), as fairseq joins
them to `audio_root`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import zipfile
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np

from s2t_jax.frontend.audio_entry import NPY_MAGIC, read_bytes

REQUIRED_COLUMNS = ("id", "audio", "n_frames", "tgt_text")
OPTIONAL_COLUMNS = ("speaker", "src_text", "src_lang", "tgt_lang")
# fairseq writes manifests with csv.QUOTE_NONE; texts may contain quotes, so we must not unquote.
T = TypeVar("T")
_TSV = dict(delimiter="\t", quotechar=None, doublequote=False, quoting=csv.QUOTE_NONE)


class ManifestError(ValueError):
    """A manifest that cannot be read: missing columns, bad rows. The message names the line."""


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A manifest row that was reported and skipped: where it is, its id if any, and why."""

    path: str
    line: int
    id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" + (f" (id {self.id})" if self.id else "")


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


def read_manifest(
    path: str | os.PathLike, on_bad_row: Callable[[BadRow], None] | None = None
) -> list[Utterance]:
    """Reads one fairseq TSV manifest (see `read_table` for how bad rows are handled)."""
    return read_table(path, REQUIRED_COLUMNS, utterance_from_row, on_bad_row)


def utterance_from_row(row: dict[str, str]) -> Utterance:
    try:
        n_frames = int(row["n_frames"])
    except ValueError:
        n_frames = -1
    if n_frames < 0:
        raise ValueError(f"n_frames {row['n_frames']!r}: expected an integer >= 0")
    return Utterance(
        id=row["id"],
        audio=row["audio"],
        n_frames=n_frames,
        tgt_text=row["tgt_text"],
        **{c: row.get(c) or "" for c in OPTIONAL_COLUMNS},
    )


def read_table(
    path: str | os.PathLike,
    required: Sequence[str],
    convert: Callable[[dict[str, str]], T],
    on_bad_row: Callable[[BadRow], None] | None = None,
) -> list[T]:
    """Reads a TSV with a header holding `required` columns; `convert` turns each row's dict
    into a record (raising ValueError for a bad value).

    A bad row (a wrong number of fields, bytes that are not UTF-8, an empty id or audio, a
    value `convert` refuses) raises ManifestError naming the file and line, or, when
    `on_bad_row` is given, is handed to it and skipped, so one bad row among a million does not
    end a run. A bad header is always an error. Lines are split on tabs only, without quoting,
    as fairseq writes them (csv.QUOTE_NONE); blank lines are skipped.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    try:
        header = lines[0].decode("utf-8").rstrip("\r").split("\t")
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}:1: the header is not UTF-8 ({e})") from e
    missing = [c for c in required if c not in header]
    if missing:
        raise ManifestError(f"{path}: header {header} lacks columns {missing}")
    records = []
    for line_no, raw in enumerate(lines[1:], start=2):
        if not raw.strip(b"\r"):
            continue
        try:
            records.append(convert(_split_row(raw, header)))
        except ValueError as e:
            text = raw.decode("utf-8", "replace")
            bad = BadRow(path, line_no, text.split("\t", 1)[0][:200], str(e))
            if on_bad_row is None:
                raise ManifestError(str(bad)) from e
            on_bad_row(bad)
    return records


def _split_row(raw: bytes, header: list[str]) -> dict[str, str]:
    """One line (without its newline) -> {column: value}; ValueError saying what is wrong."""
    try:
        fields = raw.decode("utf-8").rstrip("\r").split("\t")
    except UnicodeDecodeError as e:
        raise ValueError(f"bytes that are not UTF-8 at byte {e.start + 1}") from e
    if len(fields) != len(header):
        raise ValueError(f"{len(fields)} tab-separated fields, the header has {len(header)}")
    row = dict(zip(header, fields))
    for name in ("id", "audio"):
        if name in row and not row[name].strip():
            raise ValueError(f"empty {name}")
    return row


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
