"""eval.py's library end to end: a tiny random model on a tiny fairseq-layout corpus.

The corpus is made here (no eSpeak needed): tones-plus-noise wavs, a manifest, a small
sentencepiece model and config.yaml. The model is a transformers random checkpoint whose
cross-attention is strengthened so that hypotheses depend on the audio, converted to our
format with zero_padded_frames on, so an utterance's hypothesis does not depend on which
batch (and padding) it was decoded in: resumed and sharded runs must then agree exactly.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jiwer
import numpy as np
import pytest
import sacrebleu
import soundfile
import torch

from s2t_jax.data.prep.demo_corpus import train_spm
from s2t_jax.decoding.buckets import bucket_for
from s2t_jax.decoding.sharded import ShardedGenerator
from s2t_jax.evaluation import evaluate as ev
from s2t_jax.evaluation import outputs
from s2t_jax.evaluation.checkpoint import LoadedCheckpoint, load_checkpoint
from s2t_jax.evaluation.metrics import TextNormalizer
from s2t_jax.evaluation.sources import choose_frontend
from tests.hf_models import make_hf_model
from tests.processes import run_together

ROOT = Path(__file__).resolve().parents[2]
SR = 16000
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
NUM_GOOD = 12
BUCKETS = (64, 128)
MAX_LENGTH = 10
RUN = dict(max_length=MAX_LENGTH, batch_size=8, buckets=BUCKETS, progress=False)


# --------------------------------------------------------------------------------------------
# Fixtures: corpus, model, a reference run
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(module_compilation_cache):
    """Runs of one test compile the same programs as others: compile each once per module."""
    return module_compilation_cache


def _write_spm(root, texts, vocab_size=40):
    """fairseq's spm recipe (specials 0..3) -> (model file name, dict file name, dict size)."""
    prefix = train_spm(root, texts, vocab_size)
    pieces = (root / f"{prefix}.txt").read_text().splitlines()
    return f"{prefix}.model", f"{prefix}.txt", 4 + len(pieces)


def _wave(rng, seconds):
    t = np.arange(int(SR * seconds)) / SR
    freqs = rng.uniform(150, 3000, size=3)
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs) / 6 + 0.05 * rng.standard_normal(t.size)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """root with test.tsv (12 good rows, a corrupt and a missing file), config.yaml, spm."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    rows, texts = [], []
    for i in range(NUM_GOOD):
        text = " ".join(rng.choice(WORDS, size=rng.integers(2, 5)))
        if i % 3 == 0:
            text = text.capitalize() + "."  # something for the normalisation options
        seconds = float(rng.uniform(0.3, 1.2))  # 30..120 frames: both buckets
        soundfile.write(root / "audio" / f"u{i}.wav", _wave(rng, seconds), SR)
        rows.append((f"utt{i:02d}", f"audio/u{i}.wav", int(seconds * 100), text))
        texts.append(text)
    (root / "audio" / "bad.flac").write_bytes(b"fLaC but not really a flac file")
    rows.insert(3, ("corrupt", "audio/bad.flac", 50, "charlie delta"))
    rows.insert(7, ("missing", "audio/nowhere.wav", 60, "echo golf"))
    with open(root / "test.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["id", "audio", "n_frames", "tgt_text", "speaker"])
        w.writerows(r + ("spk",) for r in rows)
    spm_model, dict_file, vocab = _write_spm(root, texts + [" ".join(WORDS)] * 3)
    (root / "config.yaml").write_text(
        f"vocab_filename: {dict_file}\n"
        f"bpe_tokenizer: {{bpe: sentencepiece, sentencepiece_model: {spm_model}}}\n"
        "input_feat_per_channel: 80\ninput_channels: 1\n"
        "transforms:\n  '*': [utterance_cmvn]\n"
    )
    return {
        "root": root,
        "manifest": str(root / "test.tsv"),
        "vocab": vocab,
        "rows": rows,
        "spm": root / spm_model,
    }


@pytest.fixture(scope="module")
def checkpoint(corpus, tmp_path_factory):
    """Our-format model dir (no processor files: the corpus's config.yaml is the front end)."""
    from s2t_jax import Speech2TextForConditionalGeneration

    hf = make_hf_model(
        seed=1,
        decisive=True,
        vocab_size=corpus["vocab"],
        max_target_positions=32,
        tie_word_embeddings=False,  # tied, the start token (eos) tends to repeat at once
    )
    with torch.no_grad():  # make the decoder listen to the encoder (seed: some stop early)
        for layer in hf.model.decoder.layers:
            layer.encoder_attn.v_proj.weight.mul_(4.0)
            layer.encoder_attn.out_proj.weight.mul_(4.0)
    hf_dir = tmp_path_factory.mktemp("hf_model")
    hf.save_pretrained(hf_dir)
    ours = tmp_path_factory.mktemp("model")
    model = Speech2TextForConditionalGeneration.from_pretrained(hf_dir, zero_padded_frames=True)
    model.save_pretrained(ours)
    return str(ours)


@pytest.fixture(scope="module")
def reference_run(corpus, checkpoint, tmp_path_factory):
    """One full run on one device: (results, output dir)."""
    out = tmp_path_factory.mktemp("eval_ref")
    results = ev.evaluate(checkpoint, corpus["manifest"], str(out), num_devices=1, **RUN)
    return results, out


def _rows(out):
    with open(os.path.join(out, outputs.HYPOTHESES_FILE), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _results(out):
    with open(os.path.join(out, outputs.RESULTS_FILE)) as f:
        return json.load(f)


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------


def test_files_and_metrics(corpus, reference_run):
    results, out = reference_run
    assert results == _results(out)
    rows = _rows(out)
    good = [r[0] for r in corpus["rows"] if r[0] not in ("corrupt", "missing")]
    assert [r["id"] for r in rows] == good  # manifest order, each utterance once
    assert tuple(rows[0]) == outputs.HYP_COLUMNS
    assert results["utterances"] == {
        "manifest": NUM_GOOD + 2,
        "scored": NUM_GOOD,
        "decoded_this_run": NUM_GOOD,
        "resumed": 0,
        "skipped": 2,
        "bad_rows": 0,
    }
    reasons = {s["id"]: s["reason"] for s in results["skipped"]}
    assert set(reasons) == {"corrupt", "missing"}
    assert "bad.flac" in reasons["corrupt"] and "nowhere.wav" in reasons["missing"]
    refs = {r[0]: r[3] for r in corpus["rows"]}
    assert all(r["reference"] == refs[r["id"]] for r in rows)
    hyps = [r["hypothesis"] for r in rows]
    assert len(set(hyps)) > 3, "hypotheses should depend on the audio"

    # Metrics equal jiwer / sacrebleu recomputed on the file's rows.
    refs = [r["reference"] for r in rows]
    m = results["metrics"]
    assert all(h.split() for h in hyps)
    assert m["wer"] == pytest.approx(100 * jiwer.wer(refs, hyps))
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    for r in rows:
        out_words = jiwer.process_words(r["reference"], r["hypothesis"])
        edits = out_words.substitutions + out_words.deletions + out_words.insertions
        assert (int(r["errors"]), int(r["ref_words"])) == (edits, len(r["reference"].split()))
    assert sum(int(r["errors"]) for r in rows) == m["wer_errors"]

    seconds = sum(float(r["seconds"]) for r in rows)
    assert results["audio_hours"] == pytest.approx(seconds / 3600)
    t = results["timing"]
    assert t["compile_time_s"] > 0 and t["decode_time_s"] > 0
    assert t["real_time_factor"] == pytest.approx(t["decode_time_s"] / t["decoded_audio_s"])
    # Bucketed: one compile per bucket, whatever the lengths.
    assert {s[1] for s in results["compiled_shapes"]} == set(BUCKETS)
    assert results["primary_metric"] == "wer"


def test_bad_manifest_rows_are_reported_and_skipped(corpus, checkpoint, reference_run, tmp_path):
    """Rows with a wrong field count, bytes that are not UTF-8, a bad n_frames or no id are
    listed with file and line and skipped; the others score exactly as in the clean run.
    strict=True makes the first bad row (or unreadable file) fatal instead."""
    lines = Path(corpus["manifest"]).read_bytes().splitlines(keepends=True)
    bad = [
        b"short\taudio/u0.wav\t50\n",  # 3 fields
        b"latin1\taudio/u1.wav\t50\tcaf\xe9 au lait\tspk\n",
        b"frames\taudio/u2.wav\tten\tsome text\tspk\n",
        b"\taudio/u2.wav\t50\tno id\tspk\n",
    ]
    manifest = tmp_path / "test.tsv"
    manifest.write_bytes(b"".join(lines[:2] + bad[:2] + lines[2:5] + bad[2:] + lines[5:]))
    shutil.copy(Path(corpus["root"]) / "config.yaml", tmp_path / "config.yaml")
    for name in ("audio", corpus["spm"].name, corpus["spm"].with_suffix(".txt").name):
        os.symlink(Path(corpus["root"]) / name, tmp_path / name)
    results = ev.evaluate(checkpoint, str(manifest), str(tmp_path / "out"), num_devices=1, **RUN)
    assert [(b["line"], b["id"]) for b in results["bad_rows"]] == [
        (3, "short"),
        (4, "latin1"),
        (8, "frames"),
        (9, ""),
    ]
    reasons = [b["reason"] for b in results["bad_rows"]]
    assert "3 tab-separated fields, the header has 5" in reasons[0]
    assert "not UTF-8" in reasons[1] and "n_frames 'ten'" in reasons[2]
    assert reasons[3] == "empty id"
    assert all(b["path"] == str(manifest) for b in results["bad_rows"])
    assert results["utterances"]["bad_rows"] == 4
    assert results["utterances"]["scored"] == NUM_GOOD
    assert _rows(tmp_path / "out") == _rows(reference_run[1])
    assert "4 bad manifest rows" in outputs.summary_line(results)

    with pytest.raises(ValueError, match=rf"{manifest}:3: 3 tab-separated fields"):
        ev.evaluate(checkpoint, str(manifest), str(tmp_path / "strict"), strict=True, **RUN)
    with pytest.raises(
        ValueError, match="strict: utterance (corrupt|missing): .*(bad.flac|nowhere.wav)"
    ):
        ev.evaluate(checkpoint, corpus["manifest"], str(tmp_path / "strict2"), strict=True, **RUN)


def test_normaliser_options_and_char_bleu(corpus, checkpoint, reference_run, tmp_path):
    """Rerunning a finished run with other scoring options decodes nothing and rescores."""
    _, ref_out = reference_run
    out = tmp_path / "rescore"
    shutil.copytree(ref_out, out)
    options = dict(wer_tokenizer="13a", wer_lowercase=True, wer_remove_punctuation=True)
    results = ev.evaluate(
        checkpoint,
        corpus["manifest"],
        str(out),
        num_devices=1,
        char_bleu=True,
        task="st",
        **options,
        **RUN,
    )
    assert results["utterances"]["decoded_this_run"] == 0
    rows = _rows(out)
    norm = TextNormalizer("13a", lowercase=True, remove_punctuation=True)
    refs = [norm(r["reference"]) for r in rows]
    hyps = [norm(r["hypothesis"]) for r in rows]
    assert results["metrics"]["wer"] == pytest.approx(100 * jiwer.wer(refs, hyps))
    raw_refs, raw_hyps = [r["reference"] for r in rows], [r["hypothesis"] for r in rows]
    char = sacrebleu.corpus_bleu(raw_hyps, [raw_refs], tokenize="char").score
    assert results["metrics"]["bleu"] == pytest.approx(char)
    assert results["primary_metric"] == "bleu"
    assert all(int(r["ref_words"]) == len(norm(r["reference"]).split()) for r in rows)


def test_resume_decodes_only_missing(corpus, checkpoint, reference_run, tmp_path):
    ref_results, ref_out = reference_run
    out = tmp_path / "resume"
    shutil.copytree(ref_out, out)
    hyp_path = out / outputs.HYPOTHESES_FILE
    lines = hyp_path.read_text().splitlines(keepends=True)
    kept = lines[:6]  # header + 5 rows
    torn = lines[6][: len(lines[6]) // 2]  # an interrupted write: half a line, no newline
    hyp_path.write_text("".join(kept) + torn)
    (out / outputs.RESULTS_FILE).unlink()

    results = ev.evaluate(checkpoint, corpus["manifest"], str(out), num_devices=1, **RUN)
    assert results["utterances"]["decoded_this_run"] == NUM_GOOD - 5
    assert results["utterances"]["resumed"] == 5
    assert results["metrics"] == ref_results["metrics"]
    assert results["audio_hours"] == pytest.approx(ref_results["audio_hours"])
    assert _rows(out) == _rows(ref_out)


def test_resume_refuses_other_settings(corpus, checkpoint, reference_run, tmp_path):
    _, ref_out = reference_run
    out = tmp_path / "other"
    shutil.copytree(ref_out, out)
    with pytest.raises(ValueError, match="generation"):
        ev.evaluate(checkpoint, corpus["manifest"], str(out), num_devices=1, num_beams=2, **RUN)


def test_sharded_run_matches_one_device(corpus, checkpoint, reference_run, tmp_path):
    ref_results, ref_out = reference_run
    assert len(jax.devices()) == 8
    results = ev.evaluate(checkpoint, corpus["manifest"], str(tmp_path), num_devices=8, **RUN)
    assert results["devices"]["count"] == 8
    assert results["metrics"] == ref_results["metrics"]
    assert results["skipped"] == ref_results["skipped"]
    strip = lambda rows: [{k: r[k] for k in ("id", "hypothesis", "errors")} for r in rows]  # noqa: E731
    assert strip(_rows(tmp_path)) == strip(_rows(ref_out))


def test_audio_list_gives_hypotheses_only(corpus, checkpoint, reference_run, tmp_path):
    _, ref_out = reference_run
    root = corpus["root"]
    good = [r for r in corpus["rows"] if r[0] not in ("corrupt", "missing")][:5]
    listing = root / "list.txt"
    listing.write_text("".join(f"{r[1]}\n" for r in good) + "audio/bad.flac\n")
    results = ev.evaluate(checkpoint, str(listing), str(tmp_path), num_devices=1, **RUN)
    assert results["metrics"] == {} and results["primary_metric"] is None
    assert [s["id"] for s in results["skipped"]] == ["audio/bad.flac"]
    rows = _rows(tmp_path)
    assert [r["id"] for r in rows] == [r[1] for r in good]
    assert all(r["reference"] == "" and r["errors"] == "" for r in rows)
    ref_hyps = {r["id"]: r["hypothesis"] for r in _rows(ref_out)}
    assert [r["hypothesis"] for r in rows] == [ref_hyps[r[0]] for r in good]


def test_processor_files_win_over_the_data_config(corpus, checkpoint, reference_run, tmp_path):
    """A model dir with transformers' tokenizer + extractor files uses them (same spm and
    utterance CMVN here, so the hypotheses are the data-config run's)."""
    import sentencepiece as spm

    from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor

    model_dir = tmp_path / "model_with_processor"
    shutil.copytree(checkpoint, model_dir)
    sp = spm.SentencePieceProcessor(model_file=str(corpus["spm"]))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    (model_dir / "vocab.json").write_text(json.dumps(vocab))
    shutil.copy(corpus["spm"], model_dir / "sentencepiece.bpe.model")
    Speech2TextFeatureExtractor().save_pretrained(model_dir)

    out = tmp_path / "out"
    results = ev.evaluate(str(model_dir), corpus["manifest"], str(out), num_devices=1, **RUN)
    assert results["frontend"] == f"processor files in {model_dir}"
    assert _rows(out) == _rows(reference_run[1])


def test_training_workdir(corpus, checkpoint, tmp_path):
    """A training workdir (or one of its checkpoints/<step>) loads its model params, and the
    data config its train_config.json names supplies tokenizer and CMVN."""
    from s2t_jax import Speech2TextForConditionalGeneration
    from s2t_jax.checkpoints import workdir as layout
    from s2t_jax.checkpoints.orbax_io import TrainCheckpointer

    model = Speech2TextForConditionalGeneration.from_pretrained(checkpoint)
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / layout.MODEL_CONFIG_FILE).write_text(json.dumps(model.config.to_dict()))
    data = {"root": str(corpus["root"]), "config_yaml": "config.yaml"}
    (workdir / layout.TRAIN_CONFIG_FILE).write_text(json.dumps({"data": data}))
    ckpt = TrainCheckpointer(str(workdir / layout.CHECKPOINT_DIR), keep_best=0, async_save=False)
    params = jax.tree.map(np.asarray, model.params)
    ckpt.save(7, {"step": np.int32(7), "params": {"model": params}}, {"seed": 1})
    ckpt.close()
    for path in (workdir, workdir / layout.CHECKPOINT_DIR / "7"):
        loaded = load_checkpoint(str(path))
        assert (loaded.kind, loaded.step, loaded.workdir) == ("training", 7, str(workdir))
        jax.tree.map(np.testing.assert_array_equal, loaded.model.params, params)
    frontend = choose_frontend(loaded, str(tmp_path / "elsewhere" / "test.tsv"))
    assert frontend.source.startswith(f"data config {corpus['root'] / 'config.yaml'}")
    assert frontend.audio_root == str(tmp_path / "elsewhere")


def _eval_cli(corpus, checkpoint, out, compilation_cache, *extra) -> list[str]:
    """eval.py's command line on the test corpus, at one bucket (one compile; padding does not
    move the hypotheses)."""
    return [
        sys.executable,
        str(ROOT / "eval.py"),
        f"--checkpoint={checkpoint}",
        f"--manifest={corpus['manifest']}",
        f"--output_dir={out}",
        f"--max_length={MAX_LENGTH}",
        f"--buckets={BUCKETS[-1]}",
        f"--compilation_cache={compilation_cache}",
        *extra,
    ]


@pytest.mark.slow  # two processes
def test_cli_two_processes(corpus, checkpoint, reference_run, tmp_path, compilation_cache):
    """eval.py as 2 processes x 2 CPU devices (jax.distributed over gloo): each process loads
    its rows, process 0 writes the same hypotheses and metrics as the one-device run (whose
    utterances were padded to other buckets: zero_padded_frames makes that irrelevant)."""
    ref_results, ref_out = reference_run
    out = tmp_path / "cli"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        JAX_COORDINATOR_ADDRESS=f"localhost:{_free_port()}",
        JAX_NUM_PROCESSES="2",
    )
    args = _eval_cli(corpus, checkpoint, out, compilation_cache, "--batch_size=8")
    envs = [dict(env, JAX_PROCESS_ID=str(i)) for i in range(2)]
    results = run_together([args, args], envs, tmp_path, timeout=240)
    logs = [out for _, out in results]
    assert [rc for rc, _ in results] == [0, 0], "\n".join(logs)
    assert "WER " in logs[0] and str(out / outputs.RESULTS_FILE) in logs[0]
    results = _results(out)
    assert results["devices"] == {"count": 4, "processes": 2, "kind": "cpu"}
    assert results["metrics"] == ref_results["metrics"]
    assert results["skipped"] == ref_results["skipped"]
    assert _rows(out) == _rows(ref_out)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_devices", [1, 8])
def test_generator_ids_equal_model_generate(corpus, checkpoint, num_devices):
    """The sharded decoder's ids are model.generate's for the same padded inputs."""
    from s2t_jax import Speech2TextForConditionalGeneration
    from s2t_jax.decoding.settings import resolve_settings

    model = Speech2TextForConditionalGeneration.from_pretrained(checkpoint)
    loaded = LoadedCheckpoint(model, "model_dir")
    frontend = choose_frontend(loaded, corpus["manifest"])
    feats = [frontend.load(f"audio/u{i}.wav")[0] for i in range(8)]
    frames = bucket_for(max(len(x) for x in feats), BUCKETS)
    x = np.zeros((8, frames, 80), np.float32)
    mask = np.zeros((8, frames), np.int32)
    for i, f in enumerate(feats):
        x[i, : len(f)], mask[i, : len(f)] = f, 1
    settings = resolve_settings(model, max_length=MAX_LENGTH)
    ids = ShardedGenerator(model, settings, num_devices)(x, mask)
    expected = model.generate(x, mask, max_length=MAX_LENGTH, buckets=None)
    assert ids.shape == (8, MAX_LENGTH)
    np.testing.assert_array_equal(ids[:, : expected.shape[1]], expected)
    assert np.all(ids[:, expected.shape[1] :] == model.config.pad_token_id)


def test_cli_cpu_devices(corpus, checkpoint, reference_run, tmp_path, compilation_cache):
    """eval.py --cpu_devices 3 in one process without XLA_FLAGS: 3 CPU devices, each searching
    its own rows, and the one-device run's hypotheses and metrics."""
    ref_results, _ = reference_run
    out = tmp_path / "cpu3"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        _eval_cli(corpus, checkpoint, out, compilation_cache, "--batch_size=6", "--cpu_devices=3"),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = _results(out)
    assert results["devices"] == {"count": 3, "processes": 1, "kind": "cpu"}
    assert results["metrics"] == ref_results["metrics"]


def test_ctc_decoders_and_joint_decoding(corpus, checkpoint, tmp_path):
    """--decoder ctc_greedy and --ctc_weight: each hypothesis equals the decoder
    run directly on that utterance's features; a run resumes only with the same decoder."""
    from s2t_jax.decoding.ctc_decode import ctc_greedy_generate
    from s2t_jax.evaluation.decoders import DecoderChoice

    model = load_checkpoint(checkpoint).model
    rng = np.random.default_rng(0)
    d, v = model.config.d_model, model.config.vocab_size
    bias = np.zeros(v, np.float32)
    bias[[model.config.pad_token_id, model.config.eos_token_id]] = -30.0
    model.ctc_head = {"kernel": rng.normal(size=(d, v)).astype(np.float32), "bias": bias}
    with_ctc = tmp_path / "with_ctc"
    model.save_pretrained(with_ctc)
    loaded = load_checkpoint(str(with_ctc))
    frontend = choose_frontend(loaded, corpus["manifest"])
    # (rescoring's choice of hypothesis is checked in tests/decoding/test_ctc_decode.py)
    for choice in (DecoderChoice("ctc_greedy"), DecoderChoice("attention", ctc_weight=0.3)):
        out = tmp_path / choice.decoder
        results = ev.evaluate(str(with_ctc), corpus["manifest"], str(out), decoder=choice, **RUN)
        assert results["decoder"]["decoder"] == choice.decoder
        assert results["utterances"]["scored"] == NUM_GOOD
        if choice.decoder != "ctc_greedy":
            continue
        for row in _rows(out)[:4]:
            audio = next(r[1] for r in corpus["rows"] if r[0] == row["id"])
            x, _ = frontend.load(audio)
            ids = ctc_greedy_generate(loaded.model, x[None], np.ones((1, len(x)), np.int32))
            assert row["hypothesis"] == frontend.decode(ids[0])
    with pytest.raises(ValueError, match=r"another run \(differs in \[.decoder.\]\)"):
        ev.evaluate(
            str(with_ctc),
            corpus["manifest"],
            str(tmp_path / "ctc_greedy"),
            decoder=DecoderChoice("rescoring"),
            **RUN,
        )


def test_maxlenratio_reaches_the_search(corpus, checkpoint, reference_run, tmp_path):
    """Each hypothesis is generate(..., maxlenratio=) on its utterance's features, some are cut
    short of the uncapped run's, and only the attention search takes the ratio."""
    from s2t_jax.evaluation.decoders import DecoderChoice

    loaded = load_checkpoint(checkpoint)
    frontend = choose_frontend(loaded, corpus["manifest"])
    out = tmp_path / "ratio"
    ev.evaluate(checkpoint, corpus["manifest"], str(out), maxlenratio=0.1, **RUN)
    with open(out / "run.json") as f:
        assert json.load(f)["generation"]["maxlenratio"] == 0.1
    uncapped = {r["id"]: r["hypothesis"] for r in _rows(reference_run[1])}
    rows = _rows(out)
    assert any(len(r["hypothesis"]) < len(uncapped[r["id"]]) for r in rows)
    for row in rows[:3]:
        audio = next(r[1] for r in corpus["rows"] if r[0] == row["id"])
        x, _ = frontend.load(audio)
        ids = loaded.model.generate(
            x[None], np.ones((1, len(x)), np.int32), num_beams=RUN.get("num_beams", 1),
            max_length=RUN.get("max_length"), maxlenratio=0.1,
        )  # fmt: skip
        assert row["hypothesis"] == frontend.decode(np.asarray(ids)[0])
    with pytest.raises(ValueError, match="maxlenratio / minlenratio limit the attention search"):
        ev.evaluate(
            checkpoint, corpus["manifest"], str(tmp_path / "x"), maxlenratio=0.5,
            decoder=DecoderChoice("ctc_greedy"), **RUN,
        )  # fmt: skip
