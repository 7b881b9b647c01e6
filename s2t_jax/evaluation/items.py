"""What a run decodes: the utterances of a manifest, with the references to score against.

eval.py takes a fairseq TSV, with or without `tgt_text`, or a plain list of audio paths; all
come back as `Item`s, and `manifest_sha256` fingerprints the file so a resumed run can tell it
is still reading the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable

import numpy as np

from s2t_jax.data.manifest import (
    REQUIRED_COLUMNS,
    BadRow,
    ManifestError,
    read_table,
    utterance_from_row,
)
from s2t_jax.frontend.fbank import HOP_SECONDS


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    audio: str
    n_frames: int  # a sort key only: the TSV's column, or estimated from the file header
    reference: str | None  # None: no references (a plain list of audio paths)
    tgt_lang: str = ""


def _estimate_frames(path: str) -> int:
    """Frames from a file's header (sound) or array shape (.npy); 0 when unreadable (the error
    then surfaces, and is reported, when the file is loaded)."""
    try:
        if path.lower().endswith(".npy"):
            return int(np.load(path, mmap_mode="r").shape[0])
        import soundfile

        return int(soundfile.info(path).duration / HOP_SECONDS)
    except Exception:  # any failure only loses the sort key
        return 0


def read_items(
    path: str, audio_root: str, on_bad_row: Callable[[BadRow], None] | None = None
) -> list[Item]:
    """A fairseq TSV (id, audio, n_frames, tgt_text, ...) or a plain list of audio paths.

    A TSV is recognised by a header holding `id` and `audio`; without `tgt_text` it gives
    hypotheses only, as does a plain list (whose ids are the paths as written). A bad row
    raises ManifestError, or is handed to `on_bad_row` and skipped (see `read_table`).
    """
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", "replace")
    header = first.rstrip("\r\n").split("\t")
    if "id" in header and "audio" in header:
        if all(c in header for c in REQUIRED_COLUMNS):
            return read_table(path, REQUIRED_COLUMNS, _full_item, on_bad_row)
        return read_table(path, ("id", "audio"), _item_without_reference, on_bad_row)
    items = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                p = raw.decode("utf-8").strip()
            except UnicodeDecodeError as e:
                bad = BadRow(path, line_no, "", f"bytes that are not UTF-8 at byte {e.start + 1}")
                if on_bad_row is None:
                    raise ManifestError(str(bad)) from e
                on_bad_row(bad)
                continue
            if p:
                full = p if os.path.isabs(p) else os.path.join(audio_root, p)
                items.append(Item(p, p, _estimate_frames(full), None))
    return items


def _full_item(row: dict[str, str]) -> Item:
    u = utterance_from_row(row)
    return Item(u.id, u.audio, u.n_frames, u.tgt_text, u.tgt_lang)


def _item_without_reference(row: dict[str, str]) -> Item:
    try:
        n_frames = int(row.get("n_frames") or 0)
    except ValueError as e:
        raise ValueError(f"n_frames {row['n_frames']!r}: expected an integer") from e
    return Item(row["id"], row["audio"], n_frames, None, row.get("tgt_lang") or "")


def manifest_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
