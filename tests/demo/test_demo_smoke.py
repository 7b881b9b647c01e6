"""The demo's path in miniature: corpus -> train a few steps -> export -> eval.py -> transcribe.

The same commands as scripts/demo.sh, run as subprocesses on a 12-utterance corpus with
`configs/demo.py:smoke`, so a broken link anywhere in the chain fails here.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ASSET = os.path.join(REPO, "tests", "assets", "1272-128104-0000.flac")


def _run(*args, timeout=600):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    out = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, f"{args[0]} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    corpus, work, model = root / "corpus", root / "train", root / "model"
    _run(
        "-m",
        "s2t_jax.data.demo_corpus",
        "--out",
        str(corpus),
        "--num_train",
        "12",
        "--num_dev",
        "4",
        "--num_test",
        "4",
        "--seed",
        "1",
        "--vocab_size",
        "64",
    )
    _run(
        "train.py",
        "--config",
        "configs/demo.py:smoke",
        "--workdir",
        str(work),
        f"--config.data.root={corpus}",
    )
    _run("-m", "s2t_jax.plot_metrics", str(work))
    _run("convert_checkpoint.py", "--src", str(work), "--dst", str(model))
    return corpus, work, model, root


def test_training_wrote_metrics_curves_and_checkpoint(demo):
    _, work, model, _ = demo
    rows = [json.loads(line) for line in open(work / "metrics.jsonl")]
    assert any(r.get("split") == "train" and "loss" in r for r in rows)
    assert (work / "training_curves.png").stat().st_size > 1000
    for name in (
        "config.json",
        "vocab.json",
        "sentencepiece.bpe.model",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "generation_config.json",
    ):
        assert (model / name).exists(), name
    assert json.loads((model / "export.json").read_text())["step"] == 6
    assert (model / "ctc").is_dir()  # configs/demo.py trains with a CTC loss: the head is kept


def test_eval_scores_the_test_split(demo):
    corpus, _, model, root = demo
    out = root / "eval"
    _run(
        "eval.py",
        "--checkpoint",
        str(model),
        "--manifest",
        str(corpus / "test.tsv"),
        "--num_beams",
        "2",
        "--max_length",
        "20",
        "--output_dir",
        str(out),
    )
    results = json.loads((out / "results.json").read_text())
    assert results["utterances"]["scored"] == 4
    assert results["metrics"]["wer"] >= 0
    lines = (out / "hypotheses.tsv").read_text().strip().splitlines()
    assert len(lines) == 5  # header + 4


def test_transcribe_demo_file_and_real_recording(demo):
    corpus, _, model, _ = demo
    first = (corpus / "test.tsv").read_text().splitlines()[1].split("\t")[1]
    stdout = _run(
        "-m",
        "s2t_jax.transcribe",
        "--model",
        str(model),
        "--max_length",
        "20",
        str(corpus / first),
        ASSET,
    )
    lines = stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(corpus / first), ASSET]
