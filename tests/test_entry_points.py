"""The documented command lines keep their names: each is a thin shim over a stage's module
(`python -m s2t_jax.transcribe` and friends), and each answers --help with its own usage."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "module, usage",
    [
        ("s2t_jax.transcribe", "--model"),
        ("s2t_jax.average_checkpoints", "--workdir"),
        ("s2t_jax.plot_metrics", "workdir"),
        ("s2t_jax.data.demo_corpus", "--num_train"),
        ("s2t_jax.data.prep_librispeech", "--input_root"),
    ],
)
def test_documented_module_commands_run(module, usage):
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert usage in out.stdout
