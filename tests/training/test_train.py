"""End to end on the synthetic corpus: learning, compiles, checkpoints, resume, devices, CTC."""

import functools
import glob
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from s2t_jax.checkpoints import orbax_io
from s2t_jax.checkpoints.averaging import average_checkpoints
from s2t_jax.checkpoints.workdir import load_train_checkpoint
from s2t_jax.data.data_config import DataConfig
from s2t_jax.frontend.specaugment import POLICIES
from s2t_jax.modeling import Speech2TextForConditionalGeneration
from s2t_jax.models.params import abstract_params
from s2t_jax.training import train_state
from s2t_jax.training.metrics_writer import read_metrics
from s2t_jax.training.trainer import train_and_evaluate
from tests.data.helpers import first_batch
from tests.training.helpers import debug_config, make_task, random_batch
from tests.training.synthetic import write_corpus

STEPS = 200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), num_train=256, num_dev=32)


def run_config(corpus, **overrides):
    return debug_config(
        **{
            "data.root": corpus,
            "max_update": STEPS,
            "lr": 1e-2,
            "save_interval_updates": 100,
            "log_interval": 5,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = run_config(corpus)
    return config, workdir, train_and_evaluate(config, workdir)


def test_loss_goes_down_and_each_bucket_compiles_once(run):
    _, workdir, summary = run
    train = read_metrics(workdir, "train")
    assert summary["step"] == STEPS and len(train) == STEPS // 5
    assert train[-1]["loss"] < 0.5 * train[0]["loss"], [r["loss"] for r in train]
    assert summary["valid"]["accuracy"] > 0.5 and np.isfinite(summary["valid"]["loss"])
    assert summary["train_compiles"] == 2  # two buckets (24 and 32 frames): two traces
    assert [r["frames"] for r in read_metrics(workdir, "compile")] in ([24, 32], [32, 24])


def test_logs_checkpoints_and_export(run):
    _, workdir, _ = run
    row = read_metrics(workdir, "train")[-1]
    for key in (
        "loss",
        "nll_loss",
        "ppl",
        "accuracy",
        "lr",
        "grad_norm",
        "frames_per_s",
        "utt_per_s",
        "step_time",
    ):
        assert np.isfinite(row[key]), key
    assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
    assert "wer" in read_metrics(workdir, "valid")[-1]
    ckpt = orbax_io.TrainCheckpointer(os.path.join(workdir, "checkpoints"))
    assert ckpt.all_steps() == [100, 200]
    ckpt.close()
    config, params, _, stats, step = load_train_checkpoint(workdir)
    assert step == STEPS and stats is None  # no batch norm in a Transformer
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, abstract_params(config))
    p100 = load_train_checkpoint(workdir, 100).params
    _, mean, mean_stats, used = average_checkpoints(workdir, num=2)
    assert used == [100, 200] and mean_stats is None
    jax.tree.map(
        lambda m, a, b: np.testing.assert_allclose(m, (a + b) / 2, rtol=1e-6), mean, p100, params
    )


def test_resume_continues_exactly(run, tmp_path):
    """Restart from the step-100 checkpoint: the next updates match the uninterrupted run."""
    config, workdir, _ = run
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "200"))
    os.remove(os.path.join(resumed, "metrics.jsonl"))
    summary = train_and_evaluate(run_config(config.data.root, max_update=120), resumed)
    assert summary["step"] == 120
    want = {r["step"]: r for r in read_metrics(workdir, "train") if 100 < r["step"] <= 120}
    got = {r["step"]: r for r in read_metrics(resumed, "train")}
    assert sorted(got) == sorted(want) == [105, 110, 115, 120]
    for step in want:
        for key in ("loss", "nll_loss", "grad_norm", "lr"):
            assert got[step][key] == pytest.approx(want[step][key], rel=1e-6), (step, key)


def _one_step(task, batch, n_devices):
    mesh = Mesh(np.asarray(jax.devices()[:n_devices]), ("data",))
    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    state = train_state.init_state(task, jax.random.key(0))
    shardings = jax.tree.map(lambda _: repl, state)
    step = jax.jit(
        functools.partial(train_state.train_step, task),
        in_shardings=(shardings, data, repl),
        out_shardings=(shardings, repl),
    )
    state, metrics = step(
        jax.device_put(state, shardings), jax.device_put(batch, data), jax.random.key(1)
    )
    return jax.device_get(state), jax.device_get(metrics)


def test_one_and_eight_devices_agree(corpus):
    """Same global batch, with dropout and SpecAugment on: the same loss and update."""
    assert len(jax.devices()) >= 8
    data = DataConfig.load(corpus)
    host = first_batch(
        data, "train", 32, 64, is_train=True, frame_buckets=(24, 32), max_tokens=512, num_shards=8
    )
    batch = {k: host[k] for k in train_state.DEVICE_KEYS}
    policy = POLICIES["lb"].__class__(
        freq_mask_n=1, freq_mask_f=4, time_mask_n=1, time_mask_t=5, time_mask_p=1.0
    )
    _, task = make_task(specaugment=policy, **{"model.dropout": 0.1})
    s1, m1 = _one_step(task, batch, 1)
    s8, m8 = _one_step(task, batch, 8)
    for key in ("loss", "nll_loss", "ntokens", "grad_norm"):
        np.testing.assert_allclose(m1[key], m8[key], rtol=1e-5, err_msg=key)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        s1["params"],
        s8["params"],
    )


def test_ctc_head_lives_outside_the_model_params():
    _, task = make_task(ctc_weight=0.3)
    state = train_state.init_state(task, jax.random.key(0))
    assert set(state["params"]) == {"model", "ctc"}
    assert jax.tree.structure(state["params"]["model"]) == jax.tree.structure(
        abstract_params(task.model_config)
    )
    batch = random_batch(frames=32)
    state, metrics = jax.jit(functools.partial(train_state.train_step, task))(
        state, batch, jax.random.key(0)
    )
    assert float(metrics["ctc_loss"]) > 0 and np.isfinite(float(metrics["loss"]))
    assert float(jnp.abs(state["params"]["ctc"]["kernel"]).sum()) > 0


def test_export_round_trip(run, tmp_path):
    """A training checkpoint becomes a model directory that from_pretrained reads back."""
    _, workdir, _ = run
    config, params = load_train_checkpoint(workdir)[:2]
    Speech2TextForConditionalGeneration(config, params).save_pretrained(tmp_path / "m")
    model = Speech2TextForConditionalGeneration.from_pretrained(tmp_path / "m")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(model.params), params)


def test_load_pretrained_encoder_from_workdir_and_model_dir(run, tmp_path):
    from s2t_jax.training.pretrained import load_pretrained_encoder

    _, workdir, _ = run
    config, trained = load_train_checkpoint(workdir)[:2]
    Speech2TextForConditionalGeneration(config, trained).save_pretrained(tmp_path / "m")
    _, task = make_task(vocab_size=config.vocab_size)
    fresh = jax.device_get(train_state.init_state(task, jax.random.key(7))["params"])
    for source in (workdir, str(tmp_path / "m")):
        loaded, stats = load_pretrained_encoder(source, fresh)
        assert stats is None
        jax.tree.map(np.testing.assert_array_equal, loaded["model"]["encoder"], trained["encoder"])
        jax.tree.map(np.testing.assert_array_equal, loaded["model"]["decoder"],
                     fresh["model"]["decoder"])  # fmt: skip
