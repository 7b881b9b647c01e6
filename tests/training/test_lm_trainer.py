"""The language model's trainer: text -> the speech recipe's vocabulary -> a trained LM in our
format, resumed bit-exactly, learning (valid perplexity falls far below the vocabulary size)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import lm as lm_config
from s2t_jax.checkpoints.lm import load_lm
from s2t_jax.data import lm_text
from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.prep.demo_corpus import train_spm
from s2t_jax.data.prep.sentences import make_sentences
from s2t_jax.training.lm_trainer import train_lm


@pytest.fixture(scope="module")
def text_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_data")
    sentences = make_sentences(400, seed=0)
    prefix = train_spm(root, sentences, 60)
    (root / "config.yaml").write_text(
        f"vocab_filename: {prefix}.txt\n"
        f"bpe_tokenizer: {{bpe: sentencepiece, sentencepiece_model: {prefix}.model}}\n"
    )
    (root / "train.txt").write_text("\n".join(sentences[:360]) + "\n\n")
    (root / "valid.txt").write_bytes(("\n".join(sentences[360:]) + "\n").encode() + b"\xff\xfe\n")
    return root


def _config(root, max_update, **changes):
    c = lm_config.get_config("smoke")
    c.data.root = str(root)
    c.data.train_text = "train.txt"
    c.data.valid_text = "valid.txt"
    c.max_update = max_update
    c.data.buckets = (32, 64)  # the grammar's sentences: 10-40 pieces; two compiles
    c.lr, c.lr_scheduler = 5e-3, "fixed"
    c.model.dropout = 0.0
    for k, v in changes.items():
        setattr(c, k, v)
    return c


def test_sentences_batches_and_bad_lines(text_root):
    encoder = DataConfig.load(str(text_root)).target_encoder()
    valid = lm_text.read_sentences([str(text_root / "valid.txt")], encoder, 64)
    assert valid.skipped == {"empty": 0, "not_utf8": 1, "too_long": 0}
    assert all(s[-1] == 2 for s in valid.ids)
    plan = lm_text.plan_batches(valid, (16, 32, 64), 256)
    counted = sorted(int(i) for _, rows in plan for i in rows if i >= 0)
    assert counted == list(range(len(valid.ids)))  # every sentence exactly once
    length, rows = plan[0]
    batch = lm_text.make_batch(valid, length, rows)
    s = valid.ids[int(rows[0])]
    assert batch["inputs"][0, 0] == 2 and (batch["inputs"][0, 1 : len(s)] == s[:-1]).all()
    assert (batch["targets"][0, : len(s)] == s).all()
    assert batch["inputs"].shape == (256 // length, length) and len(s) <= length


def test_trains_resumes_exactly_and_learns(text_root, tmp_path):
    straight = train_lm(_config(text_root, 6), str(tmp_path / "straight"))
    train_lm(_config(text_root, 3), str(tmp_path / "resumed"))
    resumed = train_lm(_config(text_root, 6), str(tmp_path / "resumed"))
    assert straight == resumed
    _, a = load_lm(str(tmp_path / "straight" / "lm"))
    config, b = load_lm(str(tmp_path / "resumed" / "lm"))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert config.vocab_size == DataConfig.load(str(text_root)).target_encoder().vocab_size
    # 80 updates of a tiny LM: its valid perplexity must beat the unigram model of the training
    # text (which knows the word frequencies but no context), so it has learned context.
    learned = train_lm(
        _config(text_root, 80, log_interval=40, save_interval_updates=80), str(tmp_path / "long")
    )
    encoder = DataConfig.load(str(text_root)).target_encoder()
    train = lm_text.read_sentences([str(text_root / "train.txt")], encoder, 64)
    valid = lm_text.read_sentences([str(text_root / "valid.txt")], encoder, 64)
    counts = np.bincount(np.concatenate(train.ids), minlength=config.vocab_size) + 1.0
    unigram = -np.mean(np.log(counts / counts.sum())[np.concatenate(valid.ids)])
    assert learned["valid_ppl"] < 0.7 * np.exp(unigram), (learned, np.exp(unigram))
