"""Speech translation end to end, on a replica of MuST-C's release (eSpeak NG speech, made-up
German and French): prep_mustc per pair and --joint, a tiny multilingual ST model trained a few
steps from `configs/mustc.py:multi_st,runlocal`, then eval on a manifest mixing both languages
(each row's own tag forced, one compile per shape) and eval.py --long_form on talk-level
manifests (re-segmented BLEU beside the gold segmentation's).

The model is barely trained, so no score is checked: only that every output exists, is
well-formed and holds one hypothesis per utterance, and that each row's first generated token is
its own language's tag.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2t_jax.data.manifest import read_manifest, write_manifest
from s2t_jax.data.prep import mustc
from tests.data.test_prep_mustc import make_mustc  # skips the module without eSpeak NG

ROOT = Path(__file__).resolve().parents[2]
LANGS = ("de", "fr")
MAX_LENGTH = 12

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data root, training workdir)."""
    from configs import mustc as mustc_config
    from s2t_jax.training.trainer import train_and_evaluate

    root = str(tmp_path_factory.mktemp("mustc"))
    make_mustc(root, LANGS)
    for lang in LANGS:
        mustc.prepare_language(root, lang, "st", vocab_size=40)
        mustc.write_talk_manifests(root, lang, "st", splits=("train", "dev"))
    mustc.prepare_joint(root, "st", LANGS, vocab_size=50)
    config = mustc_config.get_config("multi_st,runlocal")
    config.data.root = root
    config.data.train_subset = ",".join(f"train_{lang}_st" for lang in LANGS)
    config.data.valid_subset = ""  # no validation: this test is about eval
    config.data.buckets = (160,)  # the longest utterance has 138 frames
    config.data.num_workers = 0  # in-process loading: no worker start-up
    config.model.update(
        vocab_size=-1,  # the joint dictionary's
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        conv_channels=32,
        max_target_positions=64,
    )
    config.max_update = config.save_interval_updates = 2
    config.async_checkpointing = False
    config.num_devices = 1  # one compile for one device: quicker than over 8
    workdir = str(tmp_path_factory.mktemp("ws"))
    train_and_evaluate(config, workdir)
    return root, workdir


def _mixed_manifest(root) -> str:
    """The two languages' train rows interleaved, ids made unique per language."""
    per_lang = [
        [
            dataclasses.replace(r, id=f"{r.id}_{lang}")
            for r in read_manifest(f"{root}/train_{lang}_st.tsv")
        ]
        for lang in LANGS
    ]
    rows = [r for pair in zip(*per_lang) for r in pair]
    path = os.path.join(root, "train_mixed_st.tsv")
    write_manifest(path, rows)
    return path


def test_eval_forces_each_rows_language_in_one_compile(trained, tmp_path, monkeypatch):
    from s2t_jax.data.data_config import DataConfig
    from s2t_jax.decoding.sharded import ShardedGenerator
    from s2t_jax.evaluation import evaluate as ev

    root, workdir = trained
    manifest = _mixed_manifest(root)
    seen = []  # (forced BOS [rows], ids [rows, length]) of every batch

    class Recording(ShardedGenerator):
        def __call__(self, features, mask, forced_bos=None):
            ids = super().__call__(features, mask, forced_bos)
            seen.append((np.asarray(forced_bos), ids))
            return ids

    monkeypatch.setattr(ev, "ShardedGenerator", Recording)
    out = tmp_path / "eval"
    results = ev.evaluate(
        workdir, manifest, str(out), num_beams=1, max_length=MAX_LENGTH, batch_size=4,
        buckets=(160,), task="st", progress=False,
    )  # fmt: skip
    rows = read_manifest(manifest)
    assert results["utterances"]["scored"] == len(rows) and results["primary_metric"] == "bleu"
    assert set(results["metrics"]) >= {"bleu", "chrf", "wer"}
    assert results["compiles"] == len(results["compiled_shapes"]) == 1  # both languages
    assert results["timing"]["compile_time_s"] > 0
    with open(out / "hypotheses.tsv", newline="", encoding="utf-8") as f:
        hyps = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert [h["id"] for h in hyps] == [r.id for r in rows]
    tags = DataConfig.load(root, "config_st.yaml").target_encoder().dictionary.index
    for bos, ids in seen:
        real = bos >= 0
        assert len(set(bos[real].tolist())) == 2 or not real.all()  # batches mix languages
        np.testing.assert_array_equal(ids[real, 1], bos[real])  # the first generated token
    forced = np.concatenate([bos for bos, _ in seen])
    assert sorted(forced[forced >= 0].tolist()) == sorted(
        tags[f"<lang:{r.tgt_lang}>"] for r in rows
    )


def test_eval_long_form_st_reports_resegmented_and_gold_bleu(trained, tmp_path):
    """eval.py --long_form on a training workdir: the processor comes from its recorded data
    config (the joint one, with the language tags)."""
    from s2t_jax.data.data_config import DataConfig

    root, workdir = trained
    manifest = os.path.join(root, "en-de", "train_talks_st.tsv")
    talks = read_manifest(manifest)
    with open(manifest[: -len(".tsv")] + "_segments.json", encoding="utf-8") as f:
        reference = json.load(f)
    out = tmp_path / "long"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), f"--checkpoint={workdir}",
         f"--manifest={manifest}", f"--output_dir={out}", "--long_form", "--task=st",
         "--num_beams=1", f"--max_length={MAX_LENGTH}", "--batch_size=8"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    n_segments = sum(len(reference[t.id]) for t in talks)
    assert results["recordings"] == {"manifest": len(talks), "scored": len(talks), "skipped": 0}
    assert results["primary_metric"] == "bleu"
    for key in ("resegmented", "gold_segmentation"):
        assert set(results[key]["metrics"]) >= {"bleu", "chrf"}, key
    assert results["resegmented"]["reference_segments"] == n_segments
    assert results["gold_segmentation"]["segments"] == n_segments
    records = [json.loads(line) for line in (out / "hypotheses.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [t.id for t in talks]
    tags = DataConfig.load(root, "config_st.yaml").target_encoder().dictionary.index
    de_tag = tags["<lang:de>"]
    for record in records:
        segs = reference[record["id"]]
        assert record["reference_segments"] == [s["tgt_text"] for s in segs]
        assert len(record["resegmented"]) == len(record["gold_segmentation"]) == len(segs)
        # The re-segmented pieces are the hypothesis words, in order, cut N ways.
        assert " ".join(record["resegmented"]).split() == record["hypothesis"].split()
        assert record["forced_bos_token_id"] == de_tag
        assert "<lang:" not in record["hypothesis"]
