"""Two processes x 2 CPU devices (jax.distributed over gloo) train exactly like 1 x 4 devices.

Each process reads only its half of every batch, only process 0 writes logs, Orbax saves
collectively, and validation counts each dev utterance once. The two processes run train.py;
the 4-device reference runs in this process (on 4 of the session's 8 devices) meanwhile.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from s2t_jax.checkpoints import orbax_io
from s2t_jax.training.metrics_writer import read_metrics
from tests.processes import run_together
from tests.training.synthetic import write_corpus

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


OVERRIDES = {
    "max_update": STEPS,
    "save_interval_updates": STEPS,
    "log_interval": 1,
    "wer.max_batches": 0,  # the whole dev set
    "data.buckets": (32,),
}


def _start(workdir, corpus, process_id, port):
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_PLATFORMS="cpu",
    )
    cmd = [
        sys.executable,
        "train.py",
        "--config=configs/debug.py",
        f"--workdir={workdir}",
        f"--config.data.root={corpus}",
        *[f"--config.{k}={v}" for k, v in OVERRIDES.items()],
        f"--coordinator_address=localhost:{port}",
        "--num_processes=2",
        f"--process_id={process_id}",
    ]
    log = open(os.path.join(os.path.dirname(workdir), f"process{process_id}.log"), "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def _wait(proc, log):
    try:
        rc = proc.wait(240)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    with open(log.name) as f:
        return rc, f.read()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), num_train=48, num_dev=12)


def test_two_processes_train_like_one(corpus, tmp_path):
    from s2t_jax.training.trainer import train_and_evaluate
    from tests.training.helpers import debug_config

    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    port = _free_port()
    procs = [_start(two, corpus, i, port) for i in range(2)]
    try:
        config = debug_config(**{"data.root": corpus, "num_devices": 4, **OVERRIDES})
        train_and_evaluate(config, one)
    finally:
        results = [_wait(*p) for p in procs]
    for rc, out in results:
        assert rc == 0, out[-4000:]
    assert "process 1 of 2" in results[1][1] and "[train]" not in results[1][1]
    assert "2 processes, batch split 4 ways" in results[0][1]

    want, got = read_metrics(one, "train"), read_metrics(two, "train")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, STEPS + 1))
    for a, b in zip(got, want):
        for key in ("loss", "nll_loss", "ntokens", "nsentences", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    (v2,), (v1,) = read_metrics(two, "valid"), read_metrics(one, "valid")
    with open(os.path.join(corpus, "dev.tsv")) as f:
        words = sum(len(line.split("\t")[3].split()) for line in list(f)[1:])
    assert v1["wer_words"] == v2["wer_words"] == words  # every dev utterance scored once
    for key in ("loss", "accuracy", "wer"):
        assert v2[key] == pytest.approx(v1[key], rel=1e-5, abs=1e-6), key

    def final_params(workdir):
        ckpt = orbax_io.TrainCheckpointer(os.path.join(workdir, "checkpoints"))
        try:
            state, _ = ckpt.restore(STEPS)
        finally:
            ckpt.close()
        return jax.tree_util.tree_flatten_with_path(state["params"])[0]

    for (path, a), (_, b) in zip(final_params(two), final_params(one)):
        # k_proj biases have a zero true gradient: Adam turns float noise into +-lr steps
        if "k_proj" not in jax.tree_util.keystr(path) or np.ndim(a) > 1:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=str(path))


ROWS_SCRIPT = """
import sys
import numpy as np
from s2t_jax.parallel import distributed
pid = int(sys.argv[1])
distributed.initialize(f"localhost:{sys.argv[2]}", 2, pid)
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
from s2t_jax.parallel.hosts import process_sum
from s2t_jax.parallel.mesh import make_mesh, process_rows
from s2t_jax.training import sharding
mesh = make_mesh({"data": 2, "fsdp": 2})
feed = NamedSharding(mesh, sharding.batch_spec(mesh))
local = np.arange(4 * 3, dtype=np.float32).reshape(4, 3) + 100 * pid  # this process's rows
x = jax.make_array_from_process_local_data(feed, local)
assert x.shape == (8, 3)
for out in (NamedSharding(mesh, P()), NamedSharding(mesh, P("fsdp")), feed):
    y = jax.jit(lambda a: 2 * a, out_shardings=out)(x)
    np.testing.assert_array_equal(process_rows(y, feed), 2 * local)
assert process_sum({"n": pid + 1, "m": 0.5}) == {"n": 3.0, "m": 1.0}
print("rows ok", pid)
"""


def test_each_process_gets_back_exactly_the_rows_it_fed():
    """What sharded validation relies on: a process's hypotheses are its own utterances'."""
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    commands = [[sys.executable, "-c", ROWS_SCRIPT, str(i), str(port)] for i in range(2)]
    results = run_together(commands, [env, env], ROOT, timeout=120)
    for i, (rc, out) in enumerate(results):
        assert rc == 0 and f"rows ok {i}" in out, out[-3000:]
