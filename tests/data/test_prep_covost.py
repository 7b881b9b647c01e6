"""prep_covost on a tiny replica of Common Voice + CoVoST 2: eSpeak NG speech as 48 kHz MP3."""

import csv
import io
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
import soundfile
import soxr

from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.manifest import read_manifest
from s2t_jax.data.prep import covost
from s2t_jax.data.prep.espeak import EspeakUnavailable, espeak_backend, synthesize
from s2t_jax.frontend.audio import load_audio
from s2t_jax.frontend.audio_entry import load_features_or_waveform
from s2t_jax.frontend.fbank import kaldi_fbank

try:
    espeak_backend()
except EspeakUnavailable:
    pytest.skip("eSpeak NG is not installed", allow_module_level=True)
if "MP3" not in soundfile.available_formats():
    pytest.skip("libsndfile < 1.1 cannot write MP3", allow_module_level=True)

# (clip number, CoVoST split, French sentence, English translation); listed in validated.tsv
# in this order. Clip 4's MP3 is garbage; clip 7 is not in CoVoST; clip 8 not in validated.tsv.
CLIPS = (
    (3, "train", "il fait beau aujourd'hui", "the weather is nice today"),
    (1, "train", "bonjour tout le monde", "hello everyone"),
    (2, "train_covost", "le chat dort sur le lit", "the cat sleeps on the bed"),
    (4, "train", "ceci est illisible", "this is unreadable"),
    (5, "dev", "la maison est grande", "the house is big"),
    (6, "test", "merci beaucoup", "thank you very much"),
    (7, None, "pas dans covost", "not in covost"),
)


def clip(n):
    return f"common_voice_fr_{n}"


def make_covost(data_root):
    root = os.path.join(data_root, "fr")
    os.makedirs(os.path.join(root, "clips"))
    for n, _, sentence, _ in CLIPS:
        path = os.path.join(root, "clips", clip(n) + ".mp3")
        if n == 4:
            with open(path, "wb") as f:
                f.write(b"ID3 this is not an mp3 at all" * 10)
            continue
        wave, rate = synthesize(sentence, "fr", seed=n)
        wave = soxr.resample(wave.astype(np.float32) / 32768, rate, 48000)
        soundfile.write(path, wave, 48000, format="MP3")
    with open(os.path.join(root, "validated.tsv"), "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n")
        w.writerow(["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender"])
        for n, _, sentence, _ in CLIPS:
            w.writerow([f"spk{n % 2}", clip(n) + ".mp3", sentence, 2, 0, "", ""])
    rows = ["path\ttranslation\tsplit\tclient_id"]
    rows += [f"{clip(n)}.mp3\t{en}\t{split}\tspk{n % 2}" for n, split, _, en in CLIPS if split]
    rows += [f"{clip(8)}.mp3\tghost\ttrain\tspk0"]
    data = ("\n".join(rows) + "\n").encode()
    with tarfile.open(os.path.join(root, "covost_v2.fr_en.tsv.tar.gz"), "w:gz") as tar:
        info = tarfile.TarInfo("covost_v2.fr_en.tsv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return root


def tree_bytes(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    data_root = str(tmp_path_factory.mktemp("covost"))
    make_covost(data_root)
    return data_root


def test_asr_and_st_manifests_features_vocab_config(corpus, tmp_path):
    data_root = str(tmp_path / "covost")
    shutil.copytree(corpus, data_root)
    root = os.path.join(data_root, "fr")
    summary = covost.prepare(data_root, "fr")
    rows = read_manifest(os.path.join(root, "train_asr_fr.tsv"))
    # validated.tsv's order; train_covost counts as train; the unreadable clip is reported
    assert [r.id for r in rows] == [clip(3), clip(1), clip(2)]
    assert [r.tgt_text for r in rows] == [c[2] for c in CLIPS[:3]]
    assert rows[0].speaker == "spk1"
    bad = summary["splits"]["train"]["bad"]
    assert list(bad) == [clip(4)] and data_root not in bad[clip(4)]
    assert [r.id for r in read_manifest(os.path.join(root, "dev_asr_fr.tsv"))] == [clip(5)]
    assert [r.id for r in read_manifest(os.path.join(root, "test_asr_fr.tsv"))] == [clip(6)]
    with open(os.path.join(root, "summary_asr_fr.json")) as f:
        assert json.load(f)["splits"]["train"]["hours"] > 0
    # zip members load; they are the fbank of the MP3 decoded and resampled to 16 kHz
    for r in rows:
        kind, feats = load_features_or_waveform(r.audio, root)
        assert kind == "features" and feats.shape == (r.n_frames, 80)
    mp3 = os.path.join(root, "clips", clip(1) + ".mp3")
    want = kaldi_fbank([load_audio(mp3, 16000)], 16000, 80)[0]
    np.testing.assert_allclose(load_features_or_waveform(rows[1].audio, root)[1], want, atol=1e-5)
    # character vocabulary (the recipe's), config through DataConfig
    data = DataConfig.load(root, "config_asr_fr.yaml")
    assert data.vocab_path.endswith("spm_char_asr_fr.txt")
    assert data.specaugment("train_asr_fr", True).time_mask_n == 1  # "lb"
    enc = data.target_encoder()
    assert all(len(p) == 1 or p == "\u2581" for p in enc.pieces(rows[0].tgt_text))
    assert enc.decode(enc.encode(rows[0].tgt_text)) == rows[0].tgt_text

    covost.main(["--data-root", data_root, "-s", "fr", "-t", "en", "--num-workers", "1"])
    st = read_manifest(os.path.join(root, "train_st_fr_en.tsv"))
    assert [r.tgt_text for r in st] == [c[3] for c in CLIPS[:3]]
    data = DataConfig.load(root, "config_st_fr_en.yaml")
    assert data.target_encoder().vocab_size > 10

    # fairseq's rate: fbank of the 48 kHz clip itself; about the same number of 10 ms frames
    covost.prepare(data_root, "fr", sample_rate=0)
    native = read_manifest(os.path.join(root, "train_asr_fr.tsv"))
    assert abs(native[1].n_frames - rows[1].n_frames) <= 1


def test_resume_and_determinism(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(covost, "CHUNK", 2)  # 3 resumable units of at most 2 clips
    clean, rerun = str(tmp_path / "clean"), str(tmp_path / "rerun")
    shutil.copytree(corpus, clean)
    shutil.copytree(corpus, rerun)
    covost.prepare(clean, "fr", "en", num_workers=2)
    want = tree_bytes(os.path.join(clean, "fr"))

    covost.prepare(rerun, "fr", "en", keep_features=True)
    features = os.path.join(rerun, "fr", "fbank80")
    got = tree_bytes(os.path.join(rerun, "fr"))
    assert {k: v for k, v in got.items() if not k.startswith("fbank80" + os.sep)} == want

    calls = []
    original = covost.clip_features
    monkeypatch.setattr(covost, "clip_features", lambda u: calls.append(u.key) or original(u))
    os.unlink(os.path.join(features, clip(5) + ".npy"))
    os.unlink(os.path.join(rerun, "fr", "fbank80.zip"))
    covost.prepare(rerun, "fr", "en")
    assert len(calls) == 1  # only the unit whose .npy went missing
    assert tree_bytes(os.path.join(rerun, "fr")) == want
