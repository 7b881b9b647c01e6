"""Manifests and zips: the TSV round trip, its errors, and where features are read from."""

import numpy as np
import pytest
import soundfile

from s2t_jax.data.manifest import (
    ManifestError,
    Utterance,
    create_zip,
    read_manifest,
    write_manifest,
    zip_manifest,
)
from s2t_jax.frontend.audio_entry import AudioEntryError, load_features_or_waveform


def test_manifest_round_trip_keeps_quotes_and_optional_columns(tmp_path):
    rows = [
        Utterance(
            "a",
            "x.npy",
            10,
            "he said \"hi\" 'there'",
            "s1",
            src_text="hallo",
            src_lang="en",
            tgt_lang="de",
        ),
        Utterance("b", "y.flac", 5, "plain", "s2", src_text="", src_lang="en", tgt_lang="de"),
    ]
    path = tmp_path / "m.tsv"
    write_manifest(path, rows)
    header = path.read_text().splitlines()[0].split("\t")
    assert header == [
        "id",
        "audio",
        "n_frames",
        "tgt_text",
        "speaker",
        "src_text",
        "src_lang",
        "tgt_lang",
    ]
    assert read_manifest(path) == rows


def test_manifest_errors_name_the_problem(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("id\taudio\ttgt_text\nx\ty\tz\n")
    with pytest.raises(ManifestError, match="n_frames"):
        read_manifest(path)
    path.write_text("id\taudio\tn_frames\ttgt_text\nx\ty\tten\tz\n")
    with pytest.raises(ManifestError, match=":2"):
        read_manifest(path)


def test_npy_zip_and_sound_files_resolve_relative_to_root(tmp_path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    wave = (0.1 * rng.normal(size=8000)).astype(np.float32)
    soundfile.write(tmp_path / "c.flac", wave, 16000)
    create_zip(tmp_path / "f.zip", [tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "c.flac"])
    members = zip_manifest(tmp_path / "f.zip")
    assert set(members) == {"a", "b", "c"} and members["a"][1] == 7 and members["b"][1] == 3
    ptr = members["b"][0]
    kind, x = load_features_or_waveform(ptr)
    assert kind == "features" and np.array_equal(x, b)
    relative = "f.zip:" + ptr.rsplit(":", 2)[1] + ":" + ptr.rsplit(":", 2)[2]
    assert np.array_equal(load_features_or_waveform(relative, tmp_path)[1], b)
    assert np.array_equal(load_features_or_waveform("a.npy", tmp_path)[1], a)
    kind, w = load_features_or_waveform(members["c"][0])  # a flac member of the zip
    assert kind == "waveform" and np.allclose(w, wave, atol=1e-4)
    kind, w = load_features_or_waveform("c.flac", tmp_path)
    assert kind == "waveform" and len(w) == 8000
    with pytest.raises(ValueError):
        load_features_or_waveform("missing.flac", tmp_path)
    with pytest.raises(AudioEntryError, match="offset and length must be integers"):
        load_features_or_waveform("f.zip:ten:20", tmp_path)
    with pytest.raises(AudioEntryError, match="file.zip:offset:length"):
        load_features_or_waveform("f.zip:1", tmp_path)


def test_bad_rows_are_reported_with_file_line_and_id(tmp_path):
    path = tmp_path / "m.tsv"
    path.write_bytes(
        b"id\taudio\tn_frames\ttgt_text\r\n"
        b"a\tx.npy\t5\tfine\r\n"
        b"b\tx.npy\t-3\tnegative\n"
        b"c\t\t5\tno audio\n"
        b"\n"
        b"d\tx.npy\t5\ttoo\tmany\n"
        b"e\tx.npy\t5\t\xc3\x28\n"
    )
    bad = []
    rows = read_manifest(path, on_bad_row=bad.append)
    assert [u.id for u in rows] == ["a"]
    assert [(b.line, b.id, b.reason) for b in bad] == [
        (3, "b", "n_frames '-3': expected an integer >= 0"),
        (4, "c", "empty audio"),
        (6, "d", "5 tab-separated fields, the header has 4"),
        (7, "e", "bytes that are not UTF-8 at byte 11"),
    ]
    with pytest.raises(ManifestError, match=r"m.tsv:3: n_frames '-3'.*\(id b\)"):
        read_manifest(path)
    path.write_bytes(b"\xff\xfe\n")
    with pytest.raises(ManifestError, match=r"m.tsv:1: the header is not UTF-8"):
        read_manifest(path, on_bad_row=bad.append)
