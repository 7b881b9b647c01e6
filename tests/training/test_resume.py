"""Resilience: exact resume after SIGKILL, SIGTERM, corrupt checkpoints, NaNs, full disks.

The kill test runs train.py in subprocesses (tests/training/driver.py adds the kill hooks) so
that SIGKILL is real; the rest run in-process. All use one device, one frame bucket and this
session's XLA flags and compilation cache, so the train step compiles once for the module.
"""

import errno
import glob
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2t_jax.checkpoints import orbax_io
from s2t_jax.training import resilience
from s2t_jax.training.metrics_writer import read_metrics
from tests.training.helpers import debug_config
from tests.training.synthetic import write_corpus

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), num_train=48, num_dev=8)


# --------------------------------------------------------------------------------------------
# SIGKILL / SIGTERM at several points: bitwise the same as an uninterrupted run
# --------------------------------------------------------------------------------------------

MAX_UPDATE = 40
FLAGS = [
    "--config=configs/debug.py",
    "--config.max_update={max_update}",
    "--config.save_interval_updates=8",
    "--config.keep_last_checkpoints=3",
    "--config.keep_best_checkpoints=0",
    "--config.log_interval=1",
    "--config.num_devices=1",
    "--config.data.buckets=(32,)",
    "--config.data.valid_subset=",
    "--config.async_checkpointing=True",
]


def _start(workdir, corpus, cache, max_update=MAX_UPDATE, **hooks):
    env = dict(
        os.environ,  # XLA_FLAGS as this session's (part of the compilation cache key)
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=cache,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        **{f"S2T_TEST_{k.upper()}": str(v) for k, v in hooks.items()},
    )
    flags = [f.format(max_update=max_update) for f in FLAGS]
    cmd = [sys.executable, "-m", "tests.training.driver", f"--workdir={workdir}"]
    cmd += flags + [f"--config.data.root={corpus}"]
    log = open(os.path.join(os.path.dirname(workdir), f"{os.path.basename(workdir)}.log"), "a")
    log.write(f"\n=== {hooks or 'no hooks'}\n")
    log.flush()
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log


def _finish(proc, log, timeout=180):
    try:
        rc = proc.wait(timeout)
    finally:
        log.close()
    with open(log.name) as f:
        text = f.read()
    return rc, text[text.rfind("\n=== ") :]


def _train_steps(workdir):
    return [r["step"] for r in read_metrics(workdir, "train")]


def _state(workdir, step):
    ckpt = orbax_io.TrainCheckpointer(os.path.join(workdir, "checkpoints"))
    try:
        state, meta = ckpt.restore(step)
    finally:
        ckpt.close()
    return jax.tree.map(np.asarray, state), meta


def test_killed_and_preempted_runs_resume_bitwise(corpus, tmp_path):
    cache = jax.config.jax_compilation_cache_dir or str(tmp_path / "cache")  # the session's
    clean, broken = str(tmp_path / "clean"), str(tmp_path / "broken")
    uninterrupted = _start(clean, corpus, cache, max_update=MAX_UPDATE + 4)  # alongside
    deadline = time.time() + 120  # let it compile first: the others then load its program
    while uninterrupted[0].poll() is None and time.time() < deadline:
        if read_metrics(clean, "compile"):
            break
        time.sleep(0.1)

    # 1. SIGKILL from outside at a random step (before, during or after the first save)
    kill_at = random.Random().randint(3, 12)
    proc, log = _start(broken, corpus, cache)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        steps = _train_steps(broken)
        if steps and steps[-1] >= kill_at:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    rc, out = _finish(proc, log)
    assert rc == -signal.SIGKILL, (kill_at, out[-3000:])
    killed_at = _train_steps(broken)[-1]
    assert killed_at < MAX_UPDATE, f"the run ended before the kill at {kill_at}"

    # 2. SIGKILL inside an async checkpoint save: the half-written step must be ignored
    rc, out = _finish(*_start(broken, corpus, cache, kill_in_save=1))
    assert rc == -signal.SIGKILL and "SIGKILL while saving" in out, out[-3000:]
    tmp = glob.glob(os.path.join(broken, "checkpoints", "*.orbax-checkpoint-tmp*"))
    assert tmp, os.listdir(os.path.join(broken, "checkpoints"))

    # 3. SIGKILL between checkpoints, 5 updates into the run
    rc, out = _finish(*_start(broken, corpus, cache, kill_after_steps=5))
    assert rc == -signal.SIGKILL and "SIGKILL after step" in out, out[-3000:]
    assert not set(tmp) & set(glob.glob(os.path.join(broken, "checkpoints", "*"))), "cleaned up"

    # 4. SIGTERM (preemption) 10 updates in, so after a regular save: saves the current step
    #    and exits 0
    rc, out = _finish(*_start(broken, corpus, cache, sigterm_after_steps=10))
    assert rc == 0, out[-3000:]
    preempted = _train_steps(broken)[-1]
    assert "preempted" in out and preempted < MAX_UPDATE, out[-3000:]
    ckpt = orbax_io.TrainCheckpointer(os.path.join(broken, "checkpoints"))
    assert ckpt.latest_step() == preempted
    ckpt.close()

    # 5. a torn latest checkpoint (the preemption's): the restart falls back to the previous
    #    one, says so, and runs to the end
    _truncate_data(os.path.join(broken, "checkpoints", str(preempted)))
    rc, out = _finish(*_start(broken, corpus, cache, max_update=MAX_UPDATE + 4))
    assert rc == 0, out[-3000:]
    assert f"checkpoint step {preempted} is unreadable or corrupt" in out, out[-3000:]
    assert f"falling back to checkpoint step {preempted // 8 * 8}" in out, out[-3000:]

    rc, out = _finish(*uninterrupted)
    assert rc == 0, out[-3000:]
    for step in (MAX_UPDATE - 8, MAX_UPDATE, MAX_UPDATE + 4):
        want, want_meta = _state(clean, step)
        got, got_meta = _state(broken, step)
        assert want_meta["data"] == got_meta["data"]
        jax.tree.map(np.testing.assert_array_equal, got, want)  # bitwise


# --------------------------------------------------------------------------------------------
# Corrupt checkpoints
# --------------------------------------------------------------------------------------------


def _truncate_data(step_dir):
    files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
    big = max(files, key=os.path.getsize)
    with open(big, "r+b") as f:
        f.truncate(os.path.getsize(big) // 2)


def _delete_metadata(step_dir):
    os.remove(os.path.join(step_dir, "state", "_METADATA"))


def _flip_bytes(step_dir):
    """Silent corruption: Orbax reads it back without error; only the fingerprint sees it."""
    files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
    big = max(files, key=os.path.getsize)
    with open(big, "r+b") as f:
        f.seek(os.path.getsize(big) // 2)
        f.write(b"\x00" * 64)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Orbax's reader
@pytest.mark.parametrize("damage", [_truncate_data, _delete_metadata, _flip_bytes])
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(damage, tmp_path, caplog):
    directory = str(tmp_path / "checkpoints")
    w = np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32)
    states = {s: {"w": jnp.asarray(w * s), "step": jnp.int32(s)} for s in (10, 20)}
    ckpt = orbax_io.TrainCheckpointer(directory, keep_best=0)
    for s, state in states.items():
        ckpt.save(s, state, {"step": s, "fingerprint": resilience.fingerprint(state)})
    ckpt.close()
    damage(os.path.join(directory, "20"))

    ckpt = orbax_io.TrainCheckpointer(directory, keep_best=0)
    abstract = jax.eval_shape(lambda: states[10])
    with caplog.at_level("WARNING"):
        state, meta, step = resilience.restore_latest_good(ckpt, abstract)
    assert step == 10 and meta["step"] == 10
    np.testing.assert_array_equal(state["w"], states[10]["w"])
    assert "checkpoint step 20 is unreadable or corrupt" in caplog.text
    assert "falling back to checkpoint step 10" in caplog.text
    # the bad step is moved aside, so the run can save step 20 again
    assert ckpt.all_steps() == [10] and os.listdir(directory + ".corrupt")
    ckpt.save(20, states[20], {"step": 20})
    ckpt.close()


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    directory = str(tmp_path / "checkpoints")
    state = {"w": jnp.ones((8, 8))}
    ckpt = orbax_io.TrainCheckpointer(directory, keep_best=0)
    ckpt.save(5, state, {"fingerprint": resilience.fingerprint(state)})
    ckpt.close()
    _delete_metadata(os.path.join(directory, "5"))
    ckpt = orbax_io.TrainCheckpointer(directory, keep_best=0)
    with pytest.raises(RuntimeError, match="no usable checkpoint"):
        resilience.restore_latest_good(ckpt, jax.eval_shape(lambda: state))
    ckpt.close()
    empty = orbax_io.TrainCheckpointer(str(tmp_path / "none"), keep_best=0)
    assert resilience.restore_latest_good(empty, jax.eval_shape(lambda: state)) is None
    empty.close()


def test_fingerprint_sees_every_bit_and_ignores_layout():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    tree = {"a": jnp.arange(64.0).reshape(8, 8), "b": jnp.ones(8, jnp.bfloat16), "n": jnp.int32(3)}
    base = resilience.fingerprint(tree)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:8]).reshape(2, 4), ("x", "y"))
    sharded = jax.device_put(
        tree,
        {
            "a": NamedSharding(mesh, P("y", "x")),
            "b": NamedSharding(mesh, P("x")),
            "n": NamedSharding(mesh, P()),
        },
    )
    assert resilience.fingerprint(sharded) == base
    a = np.asarray(tree["a"]).copy()
    a.view(np.uint32)[5, 3] ^= 1  # one bit
    assert resilience.fingerprint({**tree, "a": jnp.asarray(a)}) != base
    swapped = np.asarray(tree["a"]).copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert resilience.fingerprint({**tree, "a": jnp.asarray(swapped)}) != base


# --------------------------------------------------------------------------------------------
# Non-finite losses
# --------------------------------------------------------------------------------------------


@pytest.fixture
def inf_in_train_3(monkeypatch):
    """Batches holding utterance train-3 get an inf feature on their way to the device (the
    loader itself rejects feature files with inf, so this patches after it)."""
    from s2t_jax.data import loader

    load = loader.LoadBatch.map

    def poisoned(self, record):
        out = load(self, record)
        for r, i in enumerate(out["index"]):
            if i >= 0 and self.split.ids[i] == "train-3":
                out["features"][r, 2, 5] = np.inf
        return out

    monkeypatch.setattr(loader.LoadBatch, "map", poisoned)


def _nan_config(root, policy):
    return debug_config(
        **{
            "data.root": root,
            "data.valid_subset": "",
            "data.buckets": (32,),
            "max_update": 8,
            "save_interval_updates": 1,  # a checkpoint per update: compare around the bad one
            "keep_last_checkpoints": 8,
            "log_interval": 1,
            "num_devices": 1,
            "nan_policy": policy,
        }
    )


def test_nan_policy_skip_leaves_the_state_unchanged_counts_and_logs(
    corpus, inf_in_train_3, tmp_path, caplog
):
    from s2t_jax.training.trainer import train_and_evaluate

    workdir = str(tmp_path)
    with caplog.at_level("WARNING"):
        summary = train_and_evaluate(_nan_config(corpus, "skip"), workdir)
    rows = read_metrics(workdir, "train")
    skipped = [r["step"] for r in rows if r["skipped_updates"]]
    assert summary["step"] == 8 and summary["skipped_updates"] == len(skipped) >= 2, skipped
    assert "non-finite loss or gradient" in caplog.text and "train-3" in caplog.text
    bad = max(skipped)  # 48 utterances, 3 batches an epoch: train-3 is in every epoch
    before, _ = _state(workdir, bad - 1)
    after, _ = _state(workdir, bad)
    assert after["step"] == before["step"] + 1
    jax.tree.map(np.testing.assert_array_equal, after["params"], before["params"])
    jax.tree.map(np.testing.assert_array_equal, after["opt_state"], before["opt_state"])
    last, _ = _state(workdir, 8)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(last))
    # bad batches are left out of a log window's sums (a window of only bad ones shows NaN)
    assert all(np.isfinite(r["loss"]) for r in rows if not r["skipped_updates"])


def test_nan_policy_stop_names_the_step_and_utterances(corpus, inf_in_train_3, tmp_path):
    from s2t_jax.training.trainer import train_and_evaluate

    with pytest.raises(resilience.NonFiniteLoss, match=r"at update \d+ .*train-3"):
        train_and_evaluate(_nan_config(corpus, "stop"), str(tmp_path))


# --------------------------------------------------------------------------------------------
# Disk full / unwritable workdir
# --------------------------------------------------------------------------------------------


def test_disk_full_is_a_clear_error_and_keeps_good_checkpoints(corpus, tmp_path, monkeypatch):
    """ENOSPC while Orbax writes step 8 (a real write path, in the background thread)."""
    from orbax.checkpoint._src.handlers import json_checkpoint_handler as jh

    from s2t_jax.training.trainer import train_and_evaluate

    save_fn = jh.JsonCheckpointHandler._save_fn

    async def full_disk(self, x, directory):
        if x.get("step") == 8:
            raise OSError(errno.ENOSPC, "No space left on device", str(directory))
        return await save_fn(self, x, directory)

    monkeypatch.setattr(jh.JsonCheckpointHandler, "_save_fn", full_disk)
    workdir = str(tmp_path / "run")
    config = debug_config(
        **{
            "data.root": corpus,
            "data.valid_subset": "",
            "data.buckets": (32,),
            "max_update": 12,
            "save_interval_updates": 4,
            "log_interval": 4,
            "num_devices": 1,
        }
    )
    with pytest.raises(resilience.CheckpointWriteError, match="disk is full") as e:
        train_and_evaluate(config, workdir)
    assert "step 8" in str(e.value) and "steps [4]" in str(e.value)
    good, meta = _state(workdir, 4)
    assert meta["fingerprint"] == resilience.fingerprint(good)
    monkeypatch.undo()  # space freed: the rerun resumes from step 4
    assert train_and_evaluate(config, workdir)["step"] == 12
    assert _state(workdir, 4)[1]["fingerprint"] == meta["fingerprint"]


def test_unwritable_workdir_fails_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(resilience.WorkdirError, match="is not writable"):
        resilience.check_writable(str(blocker / "workdir"))
    resilience.check_writable(str(tmp_path / "fine"))
    assert os.listdir(tmp_path / "fine") == []
