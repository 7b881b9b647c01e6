"""prep_mustc on a tiny replica of MuST-C's release: talks of eSpeak NG speech cut by yaml."""

import json
import os
import shutil

import numpy as np
import pytest
import sentencepiece
import soundfile
import soxr

from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.manifest import read_manifest
from s2t_jax.data.prep import mustc
from s2t_jax.data.prep.espeak import EspeakUnavailable, espeak_backend, synthesize
from s2t_jax.frontend.audio_entry import load_features_or_waveform
from s2t_jax.frontend.fbank import kaldi_fbank

try:
    espeak_backend()
except EspeakUnavailable:
    pytest.skip("eSpeak NG is not installed", allow_module_level=True)

RATE = 16000
# (talk, split, [(English, German, French)]). fairseq sorts a talk's segments by their offset
# strings: ted_2's start at 5, ~11 and ~18 s, so "it was a good day" (~11 s) is ted_2_0, and
# ted_1's empty segment (offset 0.1) is ted_1_0, its out-of-range one (99 s) ted_1_3.
TALKS = (
    (
        "ted_1",
        "train",
        [
            (
                "the cat sat on the mat",
                "die katze sass auf der matte",
                "le chat est assis sur le tapis",
            ),
            ("dogs ran far away", "hunde liefen weit weg", "les chiens couraient loin"),
        ],
    ),
    (
        "ted_2",
        "train",
        [
            ("we went home at night", "wir gingen nachts heim", "nous sommes rentres la nuit"),
            ("it was a good day", "es war ein guter tag", "ce fut une bonne journee"),
            (
                "birds sing in the tree",
                "voegel singen im baum",
                "les oiseaux chantent dans l arbre",
            ),
        ],
    ),
    ("ted_3", "dev", [("the sun is warm", "die sonne ist warm", "le soleil est chaud")]),
)


def speech(text):
    wave, rate = synthesize(text, "en-us", seed=0)
    return soxr.resample(wave.astype(np.float32) / 32768, rate, RATE).astype(np.float32)


def make_mustc(root, langs=("de",)):
    """MuST-C's layout for `langs`; -> {segment id: (English, [start, end) samples)} of the
    first language (only it has the bad segments)."""
    expect = {}
    for li, lang in enumerate(langs):
        for split in {t[1] for t in TALKS}:
            for sub in ("wav", "txt"):
                os.makedirs(os.path.join(root, f"en-{lang}", "data", split, sub))
        lines = {}
        for talk, split, sents in TALKS:
            pieces, t = [], 0.0
            for en, de, fr in sents:
                gap = np.zeros(int(RATE * (5.0 if talk == "ted_2" else 0.3)), np.float32)
                wave = speech(en)
                pieces += [gap, wave]
                t += len(gap) / RATE
                seg = (f"{t:.6f}", f"{len(wave) / RATE:.6f}", en, de if lang == "de" else fr)
                lines.setdefault(split, []).append((talk, *seg))
                t += len(wave) / RATE
            if talk == "ted_1" and li == 0:  # a segment past the end of the talk, and one empty
                lines[split] += [(talk, "99.000000", "1.000000", "gone", "weg")]
                lines[split] += [(talk, "0.100000", "0.000000", "empty", "leer")]
            audio = np.concatenate(pieces)
            soundfile.write(
                os.path.join(root, f"en-{lang}", "data", split, "wav", f"{talk}.wav"), audio, RATE
            )
        for split, segs in lines.items():
            txt = os.path.join(root, f"en-{lang}", "data", split, "txt")
            with open(os.path.join(txt, f"{split}.yaml"), "w") as f:
                for talk, off, dur, _, _ in segs:
                    f.write(
                        f"- {{duration: {dur}, offset: {off}, rw: 1.000000, "
                        f"speaker_id: spk.{talk[4:]}, wav: {talk}.wav}}\n"
                    )
            for side, k in (("en", 3), (lang, 4)):
                with open(os.path.join(txt, f"{split}.{side}"), "w") as f:
                    f.writelines(seg[k] + "\n" for seg in segs)
            for talk in sorted({s[0] for s in segs}):
                mine = sorted([s for s in segs if s[0] == talk], key=lambda s: s[1])
                for i, (_, off, dur, en, _) in enumerate(mine):
                    start = int(float(off) * RATE)
                    if li == 0:
                        expect[f"{talk}_{i}"] = (en, (start, start + int(float(dur) * RATE)))
    return expect


class Killed(Exception):
    """Stands for the prep being killed mid-way."""


def tree_bytes(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


def prep(root, lang="de", task="st", **kw):
    return mustc.prepare_language(root, lang, task, vocab_size=kw.pop("vocab_size", 40), **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("mustc"))
    return root, make_mustc(root, ("de", "fr"))


def test_st_and_asr_manifests_features_vocab_config(corpus, tmp_path):
    src, expect = corpus
    root = str(tmp_path / "mustc")
    shutil.copytree(src, root)
    summary = prep(root, "de", "st")
    out = os.path.join(root, "en-de")
    rows = read_manifest(os.path.join(out, "train_st.tsv"))
    # fairseq's ids: ted_2's offsets sort as strings, so its 10 s+ segments come first
    assert [r.id for r in rows] == ["ted_1_1", "ted_1_2", "ted_2_0", "ted_2_1", "ted_2_2"]
    assert expect["ted_2_0"][0] == "it was a good day"
    assert rows[2].tgt_text == "es war ein guter tag" and rows[2].speaker == "spk.2"
    # the empty and the out-of-range segments are reported by id and skipped
    bad = summary["splits"]["train"]["bad"]
    assert set(bad) == {"ted_1_0", "ted_1_3"} and "empty segment" in bad["ted_1_0"]
    assert "no audio at sample" in bad["ted_1_3"]
    with open(os.path.join(out, "summary_st.json")) as f:
        assert json.load(f)["splits"]["train"]["utterances"] == 5
    assert summary["splits"]["dev"]["utterances"] == 1 and summary["splits"]["train"]["hours"] > 0
    assert not os.path.exists(os.path.join(out, "fbank80"))
    # every zip member loads, n_frames is its length, and it is the fbank of the segment
    for r in rows:
        kind, feats = load_features_or_waveform(r.audio, out)
        assert kind == "features" and feats.shape == (r.n_frames, 80) and ".zip:" in r.audio
    wav = os.path.join(out, "data", "train", "wav", "ted_2.wav")
    start, end = expect["ted_2_0"][1]
    want = kaldi_fbank([soundfile.read(wav, dtype="float32")[0][start:end]], RATE, 80)[0]
    np.testing.assert_allclose(load_features_or_waveform(rows[2].audio, out)[1], want, atol=1e-5)
    # vocabulary and config load through DataConfig as fairseq's recipe writes them
    data = DataConfig.load(out, "config_st.yaml")
    assert data.vocab_path.endswith("spm_unigram40_st.txt")
    assert data.specaugment("train_st", True).freq_mask_n == 1  # policy "lb"
    assert data.cmvn("dev_st", False) == [
        {"kind": "utterance", "norm_means": True, "norm_vars": True}
    ]
    spm = sentencepiece.SentencePieceProcessor(model_file=data.spm_path)
    assert [spm.id_to_piece(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    enc = data.target_encoder()
    assert enc.decode(enc.encode(rows[0].tgt_text)) == rows[0].tgt_text
    # ASR on the same release: English targets, its own vocabulary and config
    prep(root, "de", "asr", vocab_size=30, cmvn_type="global")
    asr = read_manifest(os.path.join(out, "train_asr.tsv"))
    assert [r.tgt_text for r in asr] == [expect[r.id][0] for r in asr]
    data = DataConfig.load(out, "config_asr.yaml")
    assert data.cmvn("train_asr", True)[0]["kind"] == "global"
    assert np.load(data.cmvn("train_asr", True)[0]["stats_npz_path"])["std"].shape == (80,)


def test_joint_st_vocabulary_with_language_tags(corpus, tmp_path):
    root = str(tmp_path / "mustc")
    shutil.copytree(corpus[0], root)
    for lang in ("de", "fr"):
        prep(root, lang, "st")
    mustc.main(
        ["--data-root", root, "--task", "st", "--joint", "--langs", "de,fr"]
        + ["--vocab-size", "50"]
    )
    data = DataConfig.load(root, "config_st.yaml")
    assert data.prepend_tgt_lang_tag and data.specaugment("x", True).freq_mask_n == 2  # "ld"
    rows = read_manifest(os.path.join(root, "train_fr_st.tsv"))
    assert rows[0].tgt_lang == "fr" and rows[0].audio.startswith("en-fr/fbank80.zip:")
    assert load_features_or_waveform(rows[0].audio, root)[1].shape[0] == rows[0].n_frames
    enc = data.target_encoder()
    ids = enc.encode(rows[0].tgt_text, rows[0].tgt_lang)
    assert enc.dictionary.symbols[ids[0]] == "<lang:fr>"


def test_resume_after_a_kill_and_after_a_deleted_output_is_byte_identical(
    corpus, tmp_path, monkeypatch
):
    clean, killed = str(tmp_path / "clean"), str(tmp_path / "killed")
    shutil.copytree(corpus[0], clean)
    shutil.copytree(corpus[0], killed)
    prep(clean, num_workers=2)  # two processes here, one below: the same bytes

    calls, killed_once = [], []
    original = mustc.talk_features

    def dies_on_second_talk(unit):
        calls.append(unit.key)
        if len(calls) == 2 and not killed_once:
            killed_once.append(unit.key)
            raise Killed
        return original(unit)

    monkeypatch.setattr(mustc, "talk_features", dies_on_second_talk)
    with pytest.raises(Killed):
        prep(killed, keep_features=True)
    calls.clear()
    prep(killed, keep_features=True)
    assert len(calls) == 2  # the first talk was not redone
    features = os.path.join(killed, "en-de", "fbank80")
    want = tree_bytes(os.path.join(clean, "en-de"))
    got = tree_bytes(os.path.join(killed, "en-de"))
    assert {k: v for k, v in got.items() if not k.startswith("fbank80" + os.sep)} == want

    # delete one segment's features and a manifest: only that talk is redone
    os.unlink(os.path.join(features, "ted_2_1.npy"))
    os.unlink(os.path.join(killed, "en-de", "train_st.tsv"))
    calls.clear()
    prep(killed)
    assert len(calls) == 1 and calls[0].endswith("ted_2.wav")
    assert tree_bytes(os.path.join(killed, "en-de")) == want


def test_talk_manifests_for_long_form_evaluation(corpus, tmp_path):
    """--talks: one row per talk wav, and its reference segments (fairseq's ids, the yaml's
    times, the text side of the task) in the sidecar that eval.py --long_form reads."""
    root = str(tmp_path / "mustc")
    shutil.copytree(corpus[0], root)
    expect = corpus[1]
    mustc.main(["--data-root", root, "--task", "asr", "--langs", "de", "--talks"])
    assert not os.path.exists(os.path.join(root, "en-de", "train_talks_asr.tsv"))  # dev only
    paths = mustc.write_talk_manifests(root, "de", "asr", splits=("train", "dev"))
    out = os.path.join(root, "en-de")
    assert paths == [os.path.join(out, f"{s}_talks_asr.tsv") for s in ("train", "dev")]
    rows = read_manifest(paths[0])
    assert [r.id for r in rows] == ["ted_1", "ted_2"]
    with open(paths[0][: -len(".tsv")] + "_segments.json", encoding="utf-8") as f:
        sidecar = json.load(f)
    for row in rows:
        wave, rate = soundfile.read(os.path.join(out, row.audio))
        assert rate == RATE and row.n_frames == int(len(wave) / RATE / 0.01)
        segs = sidecar[row.id]
        assert [s["id"] for s in segs] == sorted(
            (k for k in expect if k.startswith(row.id + "_")), key=lambda k: int(k.split("_")[-1])
        )
        for s in segs:
            text, (start, end) = expect[s["id"]]
            assert s["tgt_text"] == text
            assert round(s["offset"] * RATE) == start and round(s["duration"] * RATE) == end - start
        assert row.tgt_text == " ".join(s["tgt_text"] for s in segs)
    st = mustc.write_talk_manifests(root, "de", "st", splits=("dev",))
    (row,) = read_manifest(st[0])
    assert (row.id, row.tgt_text, row.tgt_lang) == ("ted_3", "die sonne ist warm", "de")
