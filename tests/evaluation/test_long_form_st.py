"""eval --long_form for ST, without a model: the decoders are replaced by fixed outputs, so the
re-segmentation, the gold segments' audio cuts, the per-recording language tags and the scores
can be checked against hand-made answers and sacrebleu."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import sacrebleu
import soundfile

from s2t_jax.evaluation import long_form
from s2t_jax.evaluation.long_form import alignment_key, read_reference_segments

SR = 16000
# Two talks; the segmenter's cuts (the fake transcribe's segments) differ from the reference's.
REFERENCE = {
    "talk_de": [
        {"offset": 0.5, "duration": 1.0, "tgt_text": "guten morgen alle"},
        {"offset": 2.0, "duration": 0.75, "tgt_text": "wie geht es"},
    ],
    "talk_fr": [{"offset": 0.25, "duration": 1.5, "tgt_text": "bonjour tout le monde"}],
}
SEGMENTED = {  # what the "segmenter + model" say (the forced tag is a special token: not text)
    "talk_de": ["Guten morgen", "alle, wie geht es"],
    "talk_fr": ["bonjour le monde"],
}
GOLD = {"talk_de": ["guten morgen", "wie geht"], "talk_fr": ["bonjour tout le monde"]}
TAGS = {"<lang:de>": 7, "<lang:fr>": 8}


@pytest.fixture
def talks(tmp_path):
    for name in REFERENCE:
        soundfile.write(tmp_path / f"{name}.wav", np.zeros(3 * SR, np.float32), SR)
    (tmp_path / "talks.tsv").write_text(
        "id\taudio\tn_frames\ttgt_text\tspeaker\ttgt_lang\n"
        "talk_de\ttalk_de.wav\t300\tguten morgen alle wie geht es\ts\tde\n"
        "talk_fr\ttalk_fr.wav\t300\tbonjour tout le monde\ts\tfr\n"
    )
    (tmp_path / "talks_segments.json").write_text(json.dumps(REFERENCE))
    return tmp_path


def test_st_long_form_resegments_and_scores_gold_segments(talks, monkeypatch):
    import s2t_jax.decoding.transcribe as transcribe

    calls = []

    def fake_transcribe(model, processor, paths, **kwargs):
        calls.append(([p.rsplit("/", 1)[-1] for p in paths], kwargs.get("forced_bos_token_id")))
        names = [p.rsplit("/", 1)[-1][: -len(".wav")] for p in paths]
        return {
            i: [{"start": 0.0, "end": 1.0, "text": t} for t in SEGMENTED[n]]
            for i, n in enumerate(names)
        }

    pieces_seen = []

    def fake_translate(model, processor, pieces, forced, batch_size, **kwargs):
        pieces_seen.extend(zip([len(p) for p in pieces], forced))
        return GOLD["talk_de"] + GOLD["talk_fr"]

    monkeypatch.setattr(transcribe, "transcribe_segments", fake_transcribe)
    monkeypatch.setattr(long_form, "translate_pieces", fake_translate)
    processor = types.SimpleNamespace(
        tokenizer=types.SimpleNamespace(get_vocab=lambda: {"a": 4, **TAGS}),
        feature_extractor=types.SimpleNamespace(sampling_rate=SR),
    )
    results = long_form.evaluate_long_form(
        None, processor, str(talks / "talks.tsv"), str(talks / "out"), task="st"
    )
    # One decode per language, each with its own tag forced.
    assert sorted(calls) == [(["talk_de.wav"], 7), (["talk_fr.wav"], 8)]
    # The gold segments' audio: offset and duration times the rate, each with its talk's tag.
    assert pieces_seen == [(16000, 7), (12000, 7), (24000, 8)]

    # Hand-made re-segmentation: "Guten morgen alle," | "wie geht es";
    # "bonjour le monde" (one segment).
    records = [json.loads(x) for x in (talks / "out" / "hypotheses.jsonl").read_text().splitlines()]
    assert records[0]["hypothesis"] == "Guten morgen alle, wie geht es"
    assert records[0]["resegmented"] == ["Guten morgen alle,", "wie geht es"]
    assert records[1]["resegmented"] == ["bonjour le monde"]
    assert [r["forced_bos_token_id"] for r in records] == [7, 8]
    refs = ["guten morgen alle", "wie geht es", "bonjour tout le monde"]
    hyps = ["Guten morgen alle,", "wie geht es", "bonjour le monde"]
    reseg = results["resegmented"]
    assert reseg["reference_segments"] == 3
    assert reseg["edit_distance"] == 1  # "tout" deleted; case and "," ignored for alignment
    assert reseg["metrics"]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    gold = ["guten morgen", "wie geht", "bonjour tout le monde"]
    assert results["gold_segmentation"]["metrics"]["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(gold, [refs]).score
    )
    whole = sacrebleu.corpus_bleu(
        ["Guten morgen alle, wie geht es", "bonjour le monde"],
        [["guten morgen alle wie geht es", "bonjour tout le monde"]],
    )
    assert results["metrics"]["bleu"] == pytest.approx(whole.score)
    assert results["primary_metric"] == "bleu"


def test_unknown_language_is_skipped_by_name(talks, monkeypatch):
    import s2t_jax.decoding.transcribe as transcribe

    monkeypatch.setattr(transcribe, "transcribe_segments", lambda *a, **k: {})
    processor = types.SimpleNamespace(
        tokenizer=types.SimpleNamespace(get_vocab=lambda: {"<lang:de>": 7}),
        feature_extractor=types.SimpleNamespace(sampling_rate=SR),
    )
    results = long_form.evaluate_long_form(
        None, processor, str(talks / "talks.tsv"), str(talks / "out"), task="st"
    )
    reasons = [s["reason"] for s in results["skipped"]]
    assert any("unknown target language 'fr'" in r for r in reasons), reasons


@pytest.mark.parametrize(
    "table, message",
    [
        ("[1, 2]", "expected an object"),
        ('{"other": []}', "'talk' has no list of reference segments"),
        ('{"talk": [{"offset": 0, "duration": 1}]}', 'segment 0: expected a "tgt_text"'),
        ('{"talk": [{"offset": -1, "duration": 1, "tgt_text": "x"}]}', "'offset' must be"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_reference_segments_are_refused_by_file_and_field(tmp_path, table, message):
    path = tmp_path / "x_segments.json"
    path.write_text(table)
    with pytest.raises(ValueError, match=message) as err:
        read_reference_segments(str(path), ["talk"])
    assert str(path) in str(err.value)


def test_alignment_key():
    assert alignment_key("Talk,") == "talk" and alignment_key("«Ça»") == "ça"
    assert alignment_key(",") == ","  # punctuation alone stays comparable
