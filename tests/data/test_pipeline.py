"""Manifests, zips, data config YAML, target encoding and the bucketed loader."""

import os

import numpy as np
import pytest
import soundfile

from s2t_jax.data import pipeline
from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.manifest import (
    ManifestError,
    Utterance,
    create_zip,
    load_features_or_waveform,
    read_manifest,
    write_manifest,
    zip_manifest,
)
from s2t_jax.data.vocab import EOS, PAD, FairseqDictionary, TargetEncoder
from s2t_jax.frontend.specaugment import POLICIES
from tests.training.synthetic import write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), num_train=64, num_dev=8)


# --- manifests ----------------------------------------------------------------------------------


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


# --- data config ------------------------------------------------------------------------------


def test_data_config_reads_fairseq_yaml(tmp_path):
    (tmp_path / "dict.txt").write_text("a 5\nb 3\n<lang:de> 1\n")
    np.savez(tmp_path / "gcmvn.npz", mean=np.zeros(80), std=np.ones(80))
    (tmp_path / "config.yaml").write_text(
        "vocab_filename: dict.txt\n"
        "bpe_tokenizer:\n  bpe: sentencepiece\n  sentencepiece_model: /gone/spm.model\n"
        "input_feat_per_channel: 80\n"
        "prepend_tgt_lang_tag: true\n"
        "global_cmvn:\n  stats_npz_path: gcmvn.npz\n"
        "specaugment:\n  freq_mask_F: 27\n  freq_mask_N: 1\n  time_mask_N: 1\n"
        "  time_mask_T: 100\n  time_mask_p: 1.0\n  time_wrap_W: 0\n"
        "transforms:\n  '*': [utterance_cmvn]\n"
        "feature_transforms:\n  _train: [global_cmvn, specaugment]\n  dev_x: [global_cmvn]\n"
    )
    cfg = DataConfig.load(tmp_path)
    assert cfg.vocab_path == str(tmp_path / "dict.txt")
    assert cfg.spm_path == str(tmp_path / "spm.model")  # absolute path gone: its name in root
    # fairseq: the deprecated `transforms` entries first, then `feature_transforms`
    assert cfg.transforms("train", True) == ["utterance_cmvn", "global_cmvn", "specaugment"]
    assert cfg.transforms("dev", False) == ["utterance_cmvn"]
    assert cfg.transforms("dev_x", False) == ["utterance_cmvn", "global_cmvn"]
    assert cfg.cmvn("train", True)[1] == {
        "kind": "global",
        "stats_npz_path": str(tmp_path / "gcmvn.npz"),
    }
    assert [c["kind"] for c in cfg.cmvn("dev", False)] == ["utterance"]
    assert cfg.specaugment("train", True) == POLICIES["lb"]
    assert cfg.specaugment("dev", False) is None
    assert cfg.prepend_tgt_lang_tag


def test_target_encoder_adds_eos_and_language_tag(tmp_path):
    (tmp_path / "dict.txt").write_text("hello 1\nworld 1\n<lang:de> 1\n")
    d = FairseqDictionary.load(tmp_path / "dict.txt")
    assert len(d) == 7 and d.index["hello"] == 4 and d.index["<lang:de>"] == 6
    enc = TargetEncoder(str(tmp_path / "dict.txt"), None, prepend_tgt_lang_tag=True)
    ids = enc.encode("hello there world", "de")
    assert ids.tolist() == [6, 4, 3, 5, EOS]  # tag, hello, <unk>, world, eos
    assert enc.decode(ids) == "hello <unk> world"
    with pytest.raises(ValueError, match="lang:fr"):
        enc.encode("hello", "fr")


# --- loader ------------------------------------------------------------------------------------


def _loader(corpus, subset="train", is_train=True, num_shards=8, **kw):
    data = DataConfig.load(corpus)
    split = pipeline.load_split(data, subset, data.target_encoder(), 32, 64)
    args = dict(frame_buckets=(24, 32), max_tokens=512, seed=5, num_shards=num_shards)
    args.update(kw)
    return split, pipeline.make_loader(data, split, subset, is_train=is_train, **args)


def test_buckets_respect_max_tokens_and_shards(corpus):
    _, loader = _loader(corpus)
    for b in loader.buckets:
        assert b.batch_size * b.frames <= 512 and b.batch_size % 8 == 0
        assert b.target_len % 8 == 0
    batch = next(loader)
    loader.close()
    bucket = [b for b in loader.buckets if b.frames == batch["features"].shape[1]][0]
    assert batch["features"].shape == (bucket.batch_size, bucket.frames, 16)
    assert (
        batch["target"].shape
        == batch["prev_tokens"].shape
        == (bucket.batch_size, bucket.target_len)
    )


def test_teacher_forcing_and_padding(corpus):
    split, loader = _loader(corpus)
    batch = next(loader)
    loader.close()
    for row, i in enumerate(batch["index"]):
        if i < 0:
            assert batch["attention_mask"][row].sum() == 0 and (batch["target"][row] == PAD).all()
            continue
        tgt = split.target(i)
        n = len(tgt)
        assert tgt[-1] == EOS
        assert batch["target"][row, :n].tolist() == tgt.tolist()
        assert batch["prev_tokens"][row, :n].tolist() == [EOS] + tgt[:-1].tolist()
        assert (batch["target"][row, n:] == PAD).all() and (
            batch["prev_tokens"][row, n:] == PAD
        ).all()
        frames = batch["attention_mask"][row].sum()
        assert frames == split.n_frames[i]
        x = batch["features"][row, :frames]
        np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)  # utterance CMVN
        assert (batch["features"][row, frames:] == 0).all()


def test_epochs_cover_every_utterance_once_in_a_seeded_order(corpus):
    split, loader = _loader(corpus, num_epochs=2)
    per_epoch = loader.plan.batches_per_epoch
    batches = [next(loader) for _ in range(2 * per_epoch)]
    loader.close()
    epochs = [
        np.concatenate([b["index"] for b in batches[e * per_epoch : (e + 1) * per_epoch]])
        for e in range(2)
    ]
    for idx in epochs:
        assert sorted(idx[idx >= 0].tolist()) == list(range(len(split)))
    assert not np.array_equal(epochs[0], epochs[1]), "each epoch reshuffles"
    _, again = _loader(corpus, num_epochs=2)
    assert np.array_equal(next(again)["index"], batches[0]["index"]), "same seed, same order"
    again.close()
    with pytest.raises(StopIteration):
        next(loader)


def test_iterator_state_resumes_exactly_with_workers(corpus):
    _, loader = _loader(corpus, num_epochs=2)
    first = [next(loader) for _ in range(3)]
    state = loader.get_state()
    rest = [next(loader) for _ in range(3)]
    loader.close()
    _, resumed = _loader(corpus, num_epochs=2, worker_count=1)  # other worker count: still valid
    resumed.set_state(state)
    again = [next(resumed) for _ in range(3)]
    resumed.close()
    assert first and state["consumed"] == 3
    for a, b in zip(rest, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_skips_are_counted_and_bad_audio_is_skipped_or_raised(corpus, tmp_path):
    root = tmp_path / "c"
    write_corpus(str(root), num_train=8, num_dev=8)
    rows = read_manifest(root / "dev.tsv")
    rows[0] = Utterance("empty", rows[0].audio, rows[0].n_frames, "  ")
    rows[1] = Utterance("long", rows[1].audio, 400, rows[1].tgt_text)
    rows[2] = Utterance("gone", "feats/none.npy", rows[2].n_frames, rows[2].tgt_text)
    rows[3] = Utterance("wordy", rows[3].audio, rows[3].n_frames, " ".join(["w1"] * 70))
    write_manifest(root / "dev.tsv", rows)
    split, loader = _loader(str(root), "dev", is_train=False, num_shards=1)
    assert split.skipped == {"empty_text": 1, "too_many_frames": 1, "target_too_long": 1}
    batches = list(loader)
    assert sum(int(b["bad"].sum()) for b in batches) == 1
    assert sum(int((b["index"] >= 0).sum()) for b in batches) == len(split) - 1
    _, strict = _loader(str(root), "dev", is_train=False, num_shards=1, skip_bad_audio=False)
    with pytest.raises(OSError):
        list(strict)


def test_waveform_entries_go_through_fbank(tmp_path):
    root = tmp_path / "w"
    os.makedirs(root)
    rng = np.random.default_rng(0)
    soundfile.write(root / "u.flac", (0.1 * rng.normal(size=16000)).astype(np.float32), 16000)
    (root / "dict.txt").write_text("a 1\n")
    (root / "config.yaml").write_text(
        "vocab_filename: dict.txt\ninput_feat_per_channel: 80\n"
        "transforms:\n  '*': [utterance_cmvn]\n"
    )
    write_manifest(root / "dev.tsv", [Utterance("u", "u.flac", 98, "a a")])
    data = DataConfig.load(root)
    split = pipeline.load_split(data, "dev", data.target_encoder(), 3000, 64)
    loader = pipeline.make_loader(
        data,
        split,
        "dev",
        is_train=False,
        frame_buckets=(128,),
        max_tokens=128,
        seed=0,
        num_shards=1,
    )
    batch = next(loader)
    loader.close()
    assert batch["features"].shape == (1, 128, 80) and batch["attention_mask"].sum() == 98
