"""The bucketed loader: batch sizes, teacher forcing, epochs, resume, skipped and bad audio."""

import os

import numpy as np
import pytest
import soundfile

from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.loader import make_loader
from s2t_jax.data.manifest import ManifestError, Utterance, read_manifest, write_manifest
from s2t_jax.data.split import load_split
from s2t_jax.data.vocab import EOS, PAD
from tests.data.helpers import first_batch
from tests.training.synthetic import write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), num_train=64, num_dev=8)


def _loader(corpus, subset="train", is_train=True, num_shards=8, **kw):
    data = DataConfig.load(corpus)
    skip = kw.get("skip_bad_audio", True)
    split = load_split(data, subset, data.target_encoder(), 32, 64, skip_bad_rows=skip)
    args = dict(frame_buckets=(24, 32), max_tokens=512, seed=5, num_shards=num_shards)
    args.update(kw)
    return split, make_loader(data, split, subset, is_train=is_train, **args)


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
    nan = np.load(root / rows[4].audio)
    nan[3, 5] = np.nan
    np.save(root / "feats" / "nan.npy", nan)
    rows[4] = Utterance("nan", "feats/nan.npy", rows[4].n_frames, rows[4].tgt_text)
    write_manifest(root / "dev.tsv", rows)
    with open(root / "dev.tsv", "ab") as f:
        f.write(b"torn\tfeats/x.npy\n")  # a row with too few fields
    split, loader = _loader(str(root), "dev", is_train=False, num_shards=1)
    assert split.skipped == {
        "empty_text": 1,
        "too_many_frames": 1,
        "target_too_long": 1,
        "bad_row": 1,
    }
    batches = list(loader)
    assert sum(int(b["bad"].sum()) for b in batches) == 2  # missing file, NaN features
    assert sum(int((b["index"] >= 0).sum()) for b in batches) == len(split) - 2
    assert all(np.isfinite(b["features"]).all() for b in batches)
    with pytest.raises(ManifestError, match="dev.tsv:10: 2 tab-separated fields"):
        _loader(str(root), "dev", is_train=False, num_shards=1, skip_bad_audio=False)
    rows_text = (root / "dev.tsv").read_bytes().rsplit(b"torn", 1)[0]
    (root / "dev.tsv").write_bytes(rows_text)
    _, strict = _loader(str(root), "dev", is_train=False, num_shards=1, skip_bad_audio=False)
    with pytest.raises((OSError, ValueError)):
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
    batch = first_batch(data, "dev", 3000, 64, frame_buckets=(128,), max_tokens=128, num_shards=1)
    assert batch["features"].shape == (1, 128, 80) and batch["attention_mask"].sum() == 98
