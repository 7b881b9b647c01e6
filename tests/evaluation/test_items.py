"""The manifest forms eval.py reads: a full fairseq TSV, one without references, a path list."""

import numpy as np
import pytest

from s2t_jax.data.manifest import ManifestError
from s2t_jax.evaluation.items import Item, read_items


def test_tsv_with_and_without_references(tmp_path):
    full = tmp_path / "full.tsv"
    full.write_text("id\taudio\tn_frames\ttgt_text\ttgt_lang\nu1\ta.wav\t12\thello there\tde\n")
    assert read_items(str(full), str(tmp_path)) == [Item("u1", "a.wav", 12, "hello there", "de")]
    bare = tmp_path / "bare.tsv"
    bare.write_text("id\taudio\nu1\ta.wav\n")
    assert read_items(str(bare), str(tmp_path)) == [Item("u1", "a.wav", 0, None, "")]


def test_path_list_estimates_frames_from_the_files(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((37, 80), np.float32))
    listing = tmp_path / "list.txt"
    listing.write_text("f.npy\n\nmissing.wav\n")
    items = read_items(str(listing), str(tmp_path))
    assert items == [Item("f.npy", "f.npy", 37, None), Item("missing.wav", "missing.wav", 0, None)]


def test_bad_rows_of_each_form_are_handed_over_or_raised(tmp_path):
    bad = []
    bare = tmp_path / "bare.tsv"
    bare.write_bytes(b"id\taudio\tn_frames\nu1\ta.wav\t7\nu2\tb.wav\tmany\nu3\xff\tc.wav\t1\n")
    assert read_items(str(bare), str(tmp_path), bad.append) == [Item("u1", "a.wav", 7, None, "")]
    assert [(b.line, b.reason) for b in bad] == [
        (3, "n_frames 'many': expected an integer"),
        (4, "bytes that are not UTF-8 at byte 3"),
    ]
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a.wav\n\xfe.wav\n")
    bad.clear()
    assert [i.id for i in read_items(str(listing), str(tmp_path), bad.append)] == ["a.wav"]
    assert [(b.path, b.line) for b in bad] == [(str(listing), 2)]
    with pytest.raises(ManifestError, match=r"list.txt:2: bytes that are not UTF-8"):
        read_items(str(listing), str(tmp_path))
