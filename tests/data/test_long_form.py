"""The demo corpus's long-form set: recordings made of the rendered test utterances with noise
pauses between them, with word times from eSpeak NG's own word events."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile

from s2t_jax.data.manifest import read_manifest
from s2t_jax.data.prep.demo_corpus import build_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("longform_corpus")
    build_corpus(
        out,
        num_train=6,
        num_dev=2,
        num_test=24,
        vocab_size=40,
        workers=1,
        long_form=True,
        log=lambda m: None,
    )
    return out


def test_recordings_are_the_test_utterances_with_pauses(corpus):
    test = {u.id: u for u in read_manifest(corpus / "test.tsv")}
    rows = read_manifest(corpus / "longform.tsv")
    truth = json.loads((corpus / "longform_words.json").read_text())
    assert [r.id for r in rows] == sorted(truth) and len(rows) >= 1
    used = []
    for r in rows:
        audio, rate = soundfile.read(corpus / r.audio, dtype="int16")
        spans = truth[r.id]["utterances"]
        assert 10 <= len(spans) <= 20 or r is rows[-1]
        assert r.tgt_text == " ".join(test[s["id"]].tgt_text for s in spans)
        for a, b in zip(spans[:-1], spans[1:]):
            assert 0.2 - 1e-3 <= b["start"] - a["end"] <= 1.5 + 1e-3  # the pause
        for s in spans:  # each utterance's samples are in the recording unchanged
            own, _ = soundfile.read(corpus / test[s["id"]].audio, dtype="int16")
            at = round(s["start"] * rate)
            np.testing.assert_array_equal(audio[at : at + len(own)], own)
            used.append(s["id"])
        assert abs(len(audio) / rate - spans[-1]["end"]) < 1e-3
    assert used == list(test)[: len(used)]


def test_word_times_follow_the_text_and_lie_on_speech(corpus):
    rows = read_manifest(corpus / "longform.tsv")
    truth = json.loads((corpus / "longform_words.json").read_text())
    for r in rows:
        words = truth[r.id]["words"]
        assert [w["word"] for w in words] == r.tgt_text.split()
        starts = [w["start"] for w in words]
        assert starts == sorted(starts) and all(w["start"] < w["end"] for w in words)
        audio, rate = soundfile.read(corpus / r.audio)
        spans = truth[r.id]["utterances"]
        for w in words:
            assert any(s["start"] <= w["start"] and w["end"] <= s["end"] + 1e-3 for s in spans)
        # Within words the signal is louder than in the pauses between utterances.
        inside = np.concatenate(
            [audio[int(w["start"] * rate) : int(w["end"] * rate)] for w in words]
        )
        pauses = np.concatenate(
            [audio[int(a["end"] * rate) : int(b["start"] * rate)] for a, b in zip(spans, spans[1:])]
        )
        assert np.sqrt(np.mean(inside**2)) > 5 * np.sqrt(np.mean(pauses**2))


def test_the_dev_set_is_made_from_the_dev_utterances_and_leaves_the_test_set_alone(corpus):
    from s2t_jax.data.prep.long_form import corpus_plan, main

    before = {p: (corpus / p).read_bytes() for p in ("longform.tsv", "longform_words.json")}
    main(["--corpus", str(corpus), "--split", "dev"])
    dev = {u.id: u.tgt_text for u in read_manifest(corpus / "dev.tsv")}
    rows = read_manifest(corpus / "longform_dev.tsv")
    truth = json.loads((corpus / "longform_dev_words.json").read_text())
    assert rows and all(r.id.startswith("longform_dev-") for r in rows)
    spans = [s for r in rows for s in truth[r.id]["utterances"]]
    assert [s["id"] for s in spans] == list(dev)[: len(spans)]
    assert all(dev[s["id"]] == s["text"] for s in spans)
    assert before == {p: (corpus / p).read_bytes() for p in before}
    # A manifest that no longer matches the recorded parameters is refused, not rebuilt.
    manifest = (corpus / "dev.tsv").read_text()
    header, *lines = manifest.splitlines(keepends=True)
    try:
        (corpus / "dev.tsv").write_text(header + "".join(reversed(lines)))
        with pytest.raises(ValueError, match="does not match dev.tsv"):
            corpus_plan(corpus, "dev")
    finally:
        (corpus / "dev.tsv").write_text(manifest)
