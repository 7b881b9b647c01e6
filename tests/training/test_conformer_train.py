"""Training the Conformer: batch-norm statistics in the train state, moved by training,
checkpointed, resumed exactly, averaged, exported and loaded with the weights."""

import functools
import os
import shutil

import jax
import numpy as np
import pytest

from s2t_jax.checkpoints.averaging import average_checkpoints
from s2t_jax.checkpoints.export import export_workdir
from s2t_jax.checkpoints.workdir import load_train_checkpoint
from s2t_jax.modeling import Speech2TextForConditionalGeneration
from s2t_jax.models.params import fresh_batch_stats
from s2t_jax.training import train_state
from s2t_jax.training.metrics_writer import read_metrics
from s2t_jax.training.pretrained import load_pretrained_encoder
from s2t_jax.training.trainer import train_and_evaluate
from tests.training.helpers import debug_config, make_task, random_batch
from tests.training.synthetic import write_corpus

STEPS = 30
CONFORMER = {
    "model.encoder_type": "conformer",
    "model.pos_enc_type": "rel_pos",
    "model.depthwise_conv_kernel_size": 5,
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), num_train=128, num_dev=16)


def run_config(corpus, **overrides):
    return debug_config(
        **{
            "data.root": corpus,
            "max_update": STEPS,
            "lr": 1e-2,
            "save_interval_updates": 15,
            "data.buckets": (32,),  # one train compile
            "wer.max_batches": 1,
            "log_interval": 5,
            "async_checkpointing": False,
            "ctc_weight": 0.3,
            "wer.ctc_weight": 0.3,  # validation decodes jointly with the head being trained
            **CONFORMER,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("conformer_run"))
    config = run_config(corpus)
    return config, workdir, train_and_evaluate(config, workdir)


def _leaves_equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_train_step_moves_the_running_statistics_only_on_finite_batches():
    _, task = make_task(**CONFORMER)
    state = train_state.init_state(task, jax.random.key(0))
    fresh = jax.device_get(state["batch_stats"])
    assert _leaves_equal(fresh, fresh_batch_stats(task.model_config))
    step = jax.jit(functools.partial(train_state.train_step, task))
    batch = random_batch(frames=32)
    moved, metrics = step(state, batch, jax.random.key(0))
    assert float(metrics["finite"]) == 1.0
    bn = jax.device_get(moved["batch_stats"])["encoder"]["layers_0"]["conv_module"]["batch_norm"]
    assert np.abs(bn["mean"]).max() > 0 and not np.allclose(bn["var"], 1.0)
    # torch's momentum 0.1 from mean 0: the running mean is a tenth of the batch's mean.
    poisoned = dict(batch, features=np.full_like(batch["features"], np.nan))
    kept, metrics = step(moved, poisoned, jax.random.key(0))
    assert float(metrics["finite"]) == 0.0
    assert _leaves_equal(jax.device_get(kept["batch_stats"]), jax.device_get(moved["batch_stats"]))


def test_conformer_learns_and_checkpoints_its_statistics(run):
    _, workdir, summary = run
    train = read_metrics(workdir, "train")
    assert summary["step"] == STEPS
    assert train[-1]["loss"] < 0.8 * train[0]["loss"], [r["loss"] for r in train]
    assert np.isfinite(summary["valid"]["loss"]) and "wer" in summary["valid"]
    trained = load_train_checkpoint(workdir)
    assert trained.step == STEPS and trained.ctc_head is not None
    fresh = fresh_batch_stats(trained.config)
    assert jax.tree.structure(trained.batch_stats) == jax.tree.structure(fresh)
    assert not _leaves_equal(trained.batch_stats, fresh)


def test_averaging_averages_the_statistics(run):
    _, workdir, _ = run
    a, b = load_train_checkpoint(workdir, 15), load_train_checkpoint(workdir, 30)
    _, params, stats, used = average_checkpoints(workdir, num=2)
    assert used == [15, 30]
    for mean, x, y in ((params, a.params, b.params), (stats, a.batch_stats, b.batch_stats)):
        jax.tree.map(lambda m, p, q: np.testing.assert_allclose(m, (p + q) / 2, rtol=1e-6),
                     mean, x, y)  # fmt: skip


def test_resume_restores_the_statistics_exactly(run, tmp_path):
    """Restart from step 15: the same losses and, at the end, bit-identical statistics."""
    config, workdir, _ = run
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "30"))
    os.remove(os.path.join(resumed, "metrics.jsonl"))
    train_and_evaluate(config, resumed)
    want = {r["step"]: r["loss"] for r in read_metrics(workdir, "train") if r["step"] > 15}
    got = {r["step"]: r["loss"] for r in read_metrics(resumed, "train")}
    assert got == pytest.approx(want, rel=1e-6)
    a, b = load_train_checkpoint(workdir), load_train_checkpoint(resumed)
    assert _leaves_equal(a.batch_stats, b.batch_stats) and _leaves_equal(a.params, b.params)


def test_export_and_pretrained_encoder_carry_the_statistics(run, tmp_path, monkeypatch):
    _, workdir, _ = run
    trained = load_train_checkpoint(workdir)
    # The synthetic corpus has no sentencepiece model to make tokenizer files from; the
    # weights are what this test is about.
    monkeypatch.setattr("s2t_jax.checkpoints.export.write_processor_files", lambda *a: None)
    out = export_workdir(workdir, str(tmp_path / "model"))
    model = Speech2TextForConditionalGeneration.from_pretrained(out)
    assert _leaves_equal(jax.device_get(model.batch_stats), trained.batch_stats)
    assert model.ctc_head is not None
    # The exported model's forward pass is the trained one's: eval mode, running statistics.
    batch = random_batch(frames=32, feats=16, vocab=trained.config.vocab_size)
    _, task = make_task(vocab_size=trained.config.vocab_size, **CONFORMER)
    weights = {"model": {"params": trained.params, "batch_stats": trained.batch_stats}}
    logits = model(
        batch["features"], attention_mask=batch["attention_mask"],
        decoder_input_ids=batch["prev_tokens"],
    ).logits  # fmt: skip
    module = task.module
    enc, enc_mask = module.apply(
        weights["model"], batch["features"], batch["attention_mask"], method=module.encode
    )
    want = module.apply(weights["model"], batch["prev_tokens"], enc, enc_mask, method=module.decode)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want), atol=1e-5)

    fresh = train_state.init_state(task, jax.random.key(7))
    for source in (workdir, out):
        params, stats = load_pretrained_encoder(
            source, jax.device_get(fresh["params"]), jax.device_get(fresh["batch_stats"])
        )
        assert _leaves_equal(stats["encoder"], trained.batch_stats["encoder"])
        assert _leaves_equal(params["model"]["encoder"], trained.params["encoder"])
    with pytest.raises(ValueError, match="holds a Conformer encoder, this model has a Transformer"):
        load_pretrained_encoder(workdir, jax.device_get(fresh["params"]), None)


def test_validation_decodes_as_generate_does(run, tmp_path):
    """config.wer.ctc_weight: the trainer's validation search is generate(ctc_weight=...) of
    the same weights (CTC head and batch-norm statistics included)."""
    from s2t_jax.decoding.fusion import FusionParams
    from s2t_jax.decoding.search import make_generate_fn
    from s2t_jax.training.evals import fusion_settings

    config, workdir, _ = run
    trained = load_train_checkpoint(workdir)
    settings, lm_params = fusion_settings(config, trained.config)
    assert settings.ctc_weight == 0.3 and lm_params is None
    fn = make_generate_fn(trained.config, settings)
    weights = {"params": trained.params, "batch_stats": trained.batch_stats}
    batch = random_batch(frames=32, feats=16, vocab=trained.config.vocab_size)
    ids, _ = fn(
        FusionParams(weights, trained.ctc_head, None), batch["features"], batch["attention_mask"]
    )
    model = Speech2TextForConditionalGeneration(trained.config, trained.params)
    model.batch_stats, model.ctc_head = trained.batch_stats, trained.ctc_head
    want = model.generate(
        batch["features"], batch["attention_mask"], num_beams=1,
        max_length=config.wer.max_length, ctc_weight=0.3, buckets=None,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(ids)[:, : want.shape[1]], np.asarray(want))


def test_validation_scorers_are_checked():
    from s2t_jax.training.evals import fusion_settings

    config, task = make_task(**{"wer.ctc_weight": 0.3})
    with pytest.raises(ValueError, match="set config.ctc_weight > 0 too"):
        fusion_settings(config, task.model_config)
    config, task = make_task(**{"wer.lm_weight": 0.3})
    with pytest.raises(ValueError, match="config.wer.lm and config.wer.lm_weight go together"):
        fusion_settings(config, task.model_config)
