"""The synthetic eSpeak NG demo corpus: layout, splits, audio, tokenizer, determinism.

These tests need eSpeak NG (`pip install espeakng-loader`, in requirements.txt) and fail rather
than skip without it: a machine that cannot make the demo corpus cannot run the demo.
"""

import csv
import json
import re
import sys

import numpy as np
import pytest
import sentencepiece as spm
import soundfile
import yaml

from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.prep import demo_corpus as dc
from s2t_jax.data.prep import espeak
from s2t_jax.data.prep.sentences import make_sentences
from s2t_jax.frontend.fbank import num_frames

SMALL = dict(num_train=20, num_dev=5, num_test=5, seed=0, vocab_size=64)
HEADER = ["id", "audio", "n_frames", "tgt_text", "speaker"]


def read_tsv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "corpus"
    dc.build_corpus(out, workers=2, log=lambda _: None, **SMALL)
    return out


@pytest.fixture(scope="module")
def corpus_again(tmp_path_factory):
    """Same seed, other directory, one worker: must be byte-identical to `corpus`."""
    out = tmp_path_factory.mktemp("demo_again") / "corpus"
    dc.build_corpus(out, workers=1, log=lambda _: None, **SMALL)
    return out


def test_espeak_is_installed():
    # No skip: the README's install step provides espeakng-loader, so its absence is a failure.
    assert espeak.espeak_backend() in ("library", "binary")


def test_missing_espeak_raises_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes the import fail
    monkeypatch.setattr(espeak.shutil, "which", lambda _: None)
    with pytest.raises(espeak.EspeakUnavailable, match="pip install espeakng-loader"):
        espeak.synthesize("hello there")


def test_output_layout(corpus):
    names = {p.name for p in corpus.iterdir()}
    expected = {"train.tsv", "dev.tsv", "test.tsv", "config.yaml", "corpus.json", "audio"}
    expected |= {"spm_unigram64.model", "spm_unigram64.txt"}
    assert expected <= names
    info = json.loads((corpus / "corpus.json").read_text())
    assert info["counts"] == {"train": 20, "dev": 5, "test": 5}
    assert info["params"]["seed"] == 0 and info["params"]["vocab_size"] == 64
    assert all(h > 0 for h in info["hours"].values())


def test_manifests_well_formed(corpus):
    ids = set()
    for split, n in (("train", 20), ("dev", 5), ("test", 5)):
        lines = (corpus / f"{split}.tsv").read_text().splitlines()
        assert lines[0].split("\t") == HEADER
        assert all(len(line.split("\t")) == 5 for line in lines[1:])
        rows = read_tsv(corpus / f"{split}.tsv")
        assert len(rows) == n
        for r in rows:
            assert r["id"] not in ids
            ids.add(r["id"])
            assert not r["audio"].startswith("/") and (corpus / r["audio"]).is_file()
            assert r["speaker"] in dc.VOICES
            # LibriSpeech-style text: lowercase words, no punctuation, 4-12 words
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", r["tgt_text"]), r["tgt_text"]
            assert 4 <= len(r["tgt_text"].split()) <= 12


def test_splits_have_disjoint_sentences(corpus):
    texts = {s: [r["tgt_text"] for r in read_tsv(corpus / f"{s}.tsv")] for s in dc.SPLITS}
    for s in dc.SPLITS:
        assert len(set(texts[s])) == len(texts[s])
    assert not set(texts["train"]) & set(texts["dev"])
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["dev"]) & set(texts["test"])


def test_audio_is_16k_mono_speech_with_correct_n_frames(corpus):
    for split in dc.SPLITS:
        for r in read_tsv(corpus / f"{split}.tsv"):
            info = soundfile.info(corpus / r["audio"])
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            wave, _ = soundfile.read(corpus / r["audio"], dtype="float32")
            assert int(r["n_frames"]) == 1 + (len(wave) - 400) // 160 == num_frames(len(wave))
            seconds, words = len(wave) / 16000, len(r["tgt_text"].split())
            assert 0.2 * words < seconds < 0.6 * words + 1.0, (seconds, r)  # 130-190 wpm + pads
            assert np.sqrt(np.mean(wave**2)) > 10 ** (-40 / 20)  # far above the noise floor
            assert 10 ** (-13 / 20) < np.abs(wave).max() < 1.0  # gain between -12 and -1 dBFS
            assert np.abs(wave[:400]).max() > 0  # padding carries noise, not digital silence


def test_same_seed_gives_identical_bytes(corpus, corpus_again):
    for name in ("train.tsv", "dev.tsv", "test.tsv", "spm_unigram64.model", "spm_unigram64.txt"):
        assert (corpus / name).read_bytes() == (corpus_again / name).read_bytes(), name
    files = sorted(p.relative_to(corpus) for p in (corpus / "audio").rglob("*.flac"))
    assert len(files) == 30
    for rel in files:
        assert (corpus / rel).read_bytes() == (corpus_again / rel).read_bytes(), rel


def test_other_seed_gives_other_sentences():
    a, b = make_sentences(50, 0), make_sentences(50, 1)
    assert a == make_sentences(50, 0) and a != b and len(set(a)) == 50


def test_grammar_exhaustion_is_an_error():
    grammar = {"templates": ["the {noun} slept here"], "noun": ["cat", "dog"]}
    assert sorted(make_sentences(2, 0, grammar)) == ["the cat slept here", "the dog slept here"]
    with pytest.raises(ValueError, match="distinct sentences"):
        make_sentences(3, 0, grammar)


def test_sentencepiece_model_and_fairseq_dict(corpus):
    sp = spm.SentencePieceProcessor(model_file=str(corpus / "spm_unigram64.model"))
    assert [sp.id_to_piece(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    assert (sp.bos_id(), sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    lines = (corpus / "spm_unigram64.txt").read_text().splitlines()
    assert lines == [f"{sp.id_to_piece(i)} 1" for i in range(4, sp.get_piece_size())]
    for r in read_tsv(corpus / "train.tsv"):
        assert sp.unk_id() not in sp.encode(r["tgt_text"])
        assert sp.decode(sp.encode(r["tgt_text"])) == r["tgt_text"]


def test_fairseq_data_config(corpus):
    """config.yaml reads, through the loader's own DataConfig, as the demo recipe means it."""
    data = DataConfig.load(corpus)
    assert data.spm_path == str(corpus / "spm_unigram64.model")
    assert data.vocab_path == str(corpus / "spm_unigram64.txt")
    assert (data.input_feat_per_channel, data.input_channels) == (80, 1)
    utterance = {"kind": "utterance", "norm_means": True, "norm_vars": True}
    for split, is_train in (("train", True), ("dev", False), ("test", False)):
        assert data.cmvn(split, is_train) == [utterance]
    assert data.specaugment("dev", is_train=False) is None
    policy = data.specaugment("train", is_train=True)
    assert (policy.freq_mask_n, policy.freq_mask_f) == (1, 27)
    assert (policy.time_mask_n, policy.time_mask_t, policy.time_mask_p) == (1, 100, 1.0)
    assert policy.time_warp_w == 0
    assert set(yaml.safe_load((corpus / "config.yaml").read_text())) == {
        "bpe_tokenizer",
        "vocab_filename",
        "input_feat_per_channel",
        "input_channels",
        "specaugment",
        "transforms",
    }


def test_complete_corpus_is_not_regenerated(corpus):
    before = {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()}
    messages = []
    dc.build_corpus(corpus, workers=1, log=messages.append, **SMALL)
    assert any("not regenerating" in m for m in messages)
    assert {p: p.stat().st_mtime_ns for p in corpus.rglob("*") if p.is_file()} == before


def test_changed_parameters_regenerate(tmp_path):
    params = dict(SMALL, num_train=6, num_dev=2, num_test=2)
    dc.build_corpus(tmp_path, workers=1, log=lambda _: None, **params)
    info = dc.build_corpus(tmp_path, workers=1, log=lambda _: None, **dict(params, num_train=7))
    assert info["counts"]["train"] == 7 and len(read_tsv(tmp_path / "train.tsv")) == 7


def test_voices_and_rates_change_the_audio():
    text = "the quick brown fox jumps over the lazy dog"
    base, rate = espeak.synthesize(text, "en-us", 160, 50)
    assert rate == 22050 and base.dtype == np.int16 and np.abs(base).max() > 1000
    assert np.array_equal(base, espeak.synthesize(text, "en-us", 160, 50)[0])
    for voice in ("en", "en-us+f3", "en-gb-scotland+m3"):
        other = espeak.synthesize(text, voice, 160, 50)[0]
        assert len(other) != len(base) or not np.array_equal(other, base), voice
    fast, slow = espeak.synthesize(text, "en-us", 190)[0], espeak.synthesize(text, "en-us", 130)[0]
    assert 1.2 < len(slow) / len(fast) < 1.7  # roughly 190 / 130
    high = espeak.synthesize(text, "en-us", 160, 70)[0]
    assert not np.array_equal(high[: len(base)], base[: len(high)])


def test_every_voice_exists():
    for voice in dc.VOICES:
        wave, _ = espeak.synthesize("hello", voice)
        assert np.abs(wave).max() > 1000, voice


def test_unknown_voice_is_an_error():
    with pytest.raises(ValueError, match="no voice"):
        espeak.synthesize("hello", "xx-nonexistent")


def test_num_frames_as_the_manifests_count():
    assert [num_frames(n) for n in (400, 559, 560, 16000)] == [1, 1, 2, 98]
