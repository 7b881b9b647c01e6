"""What a run decodes: the utterances of a manifest, with the references to score against.

eval.py takes a fairseq TSV, with or without `tgt_text`, or a plain list of audio paths; all
come back as `Item`s, and `manifest_sha256` fingerprints the file so a resumed run can tell it
is still reading the same one.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os

import numpy as np

from s2t_jax.data.manifest import REQUIRED_COLUMNS, read_manifest
from s2t_jax.frontend.fbank import HOP_SECONDS

_TSV = dict(delimiter="\t", quotechar=None, doublequote=False, quoting=csv.QUOTE_NONE)


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


def read_items(path: str, audio_root: str) -> list[Item]:
    """A fairseq TSV (id, audio, n_frames, tgt_text, ...) or a plain list of audio paths.

    A TSV is recognised by a header holding `id` and `audio`; without `tgt_text` it gives
    hypotheses only, as does a plain list (whose ids are the paths as written).
    """
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    if "id" in header and "audio" in header:
        if all(c in header for c in REQUIRED_COLUMNS):
            return [
                Item(u.id, u.audio, u.n_frames, u.tgt_text, u.tgt_lang) for u in read_manifest(path)
            ]
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, **_TSV))
        return [
            Item(r["id"], r["audio"], int(r.get("n_frames") or 0), None, r.get("tgt_lang") or "")
            for r in rows
        ]
    with open(path, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    return [
        Item(
            p,
            p,
            _estimate_frames(p if os.path.isabs(p) else os.path.join(audio_root, p)),
            None,
        )
        for p in paths
    ]


def manifest_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
