"""eval.py on a multilingual model: each utterance's own language tag forced, batches mixing
languages, and one compile per input shape for all of them.

The model is a tiny random transformers checkpoint whose vocabulary ends in `<lang:de>` and
`<lang:fr>` (as the joint MuST-C ST vocabulary does), converted with zero_padded_frames on so
that an utterance's ids do not depend on its batch mates. The reference for every mixed batch is
model.generate on each language's rows alone with that language's tag as the one (scalar)
forced BOS: a different code path (generate's settings, its own compiled search).
"""

from __future__ import annotations

import csv

import jax
import numpy as np
import pytest
import soundfile
import torch

from s2t_jax.data.prep.demo_corpus import train_spm
from s2t_jax.decoding import search
from s2t_jax.decoding.buckets import bucket_for
from s2t_jax.decoding.settings import resolve_settings
from s2t_jax.decoding.sharded import ShardedGenerator
from s2t_jax.evaluation import evaluate as ev
from s2t_jax.evaluation.checkpoint import load_checkpoint
from s2t_jax.evaluation.decoders import DecoderChoice, LocalGenerator
from s2t_jax.evaluation.sources import choose_frontend
from tests.hf_models import make_hf_model

SR = 16000
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel".split()
LANGS = ("de", "fr", "fr", "de", "de", "fr", "de", "fr")  # mixed, per utterance
BUCKETS = (80, 128)
MAX_LENGTH = 8
RUN = dict(max_length=MAX_LENGTH, batch_size=4, buckets=BUCKETS, progress=False, num_devices=1)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(module_compilation_cache):
    """The per-language runs compile what the mixed run compiled: read it from disk."""
    return module_compilation_cache


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """test.tsv (8 utterances, tgt_lang de/fr mixed; 0.3-1.2 s, both buckets), config.yaml
    with prepend_tgt_lang_tag and a dictionary ending in the two language tags."""
    root = tmp_path_factory.mktemp("multilingual")
    rng = np.random.default_rng(0)
    rows = []
    for i, lang in enumerate(LANGS):
        seconds = 0.3 + 0.9 * i / (len(LANGS) - 1)
        t = np.arange(int(SR * seconds)) / SR
        wave = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(150, 3000, 3)) / 6
        wave = wave + 0.05 * rng.standard_normal(t.size)
        soundfile.write(root / f"u{i}.wav", wave.astype(np.float32), SR)
        text = " ".join(rng.choice(WORDS, size=3))
        rows.append((f"utt{i}", f"u{i}.wav", int(seconds * 100), text, "spk", lang))
    prefix = train_spm(root, [" ".join(WORDS)] * 4 + [r[3] for r in rows], 30)
    with open(root / f"{prefix}.txt", "a") as f:
        f.write("<lang:de> 1\n<lang:fr> 1\n")
    vocab = 4 + len((root / f"{prefix}.txt").read_text().splitlines())
    (root / "config.yaml").write_text(
        f"vocab_filename: {prefix}.txt\n"
        f"bpe_tokenizer: {{bpe: sentencepiece, sentencepiece_model: {prefix}.model}}\n"
        "prepend_tgt_lang_tag: true\ninput_feat_per_channel: 80\ninput_channels: 1\n"
        "transforms:\n  '*': [utterance_cmvn]\n"
    )
    header = ["id", "audio", "n_frames", "tgt_text", "speaker", "tgt_lang"]
    for name, subset in [("test", rows)] + [
        (f"test_{x}", [r for r in rows if r[5] == x]) for x in ("de", "fr")
    ]:
        with open(root / f"{name}.tsv", "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(header)
            w.writerows(subset)
    return {"root": root, "rows": rows, "vocab": vocab, "tags": {"de": vocab - 2, "fr": vocab - 1}}


@pytest.fixture(scope="module")
def model_dir(corpus, tmp_path_factory):
    from s2t_jax import Speech2TextForConditionalGeneration

    hf = make_hf_model(seed=3, decisive=True, vocab_size=corpus["vocab"], tie_word_embeddings=False)
    with torch.no_grad():  # make the decoder listen to the encoder
        for layer in hf.model.decoder.layers:
            layer.encoder_attn.v_proj.weight.mul_(4.0)
            layer.encoder_attn.out_proj.weight.mul_(4.0)
    hf_dir = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(hf_dir)
    model = Speech2TextForConditionalGeneration.from_pretrained(hf_dir, zero_padded_frames=True)
    rng = np.random.default_rng(1)  # a CTC head, for joint decoding
    d, v = model.config.d_model, model.config.vocab_size
    bias = np.zeros(v, np.float32)
    bias[[model.config.pad_token_id, model.config.eos_token_id]] = -30.0
    model.ctc_head = {"kernel": rng.normal(size=(d, v)).astype(np.float32), "bias": bias}
    out = tmp_path_factory.mktemp("model")
    model.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def batch(corpus, model_dir):
    """All 8 utterances as one padded batch: (model, x, mask, per-row forced BOS)."""
    loaded = load_checkpoint(model_dir)
    frontend = choose_frontend(loaded, str(corpus["root"] / "test.tsv"))
    feats = [frontend.load(r[1])[0] for r in corpus["rows"]]
    frames = bucket_for(max(len(f) for f in feats), BUCKETS)
    x = np.zeros((len(feats), frames, 80), np.float32)  # [rows, frames, F]
    mask = np.zeros((len(feats), frames), np.int32)  # [rows, frames]
    for i, f in enumerate(feats):
        x[i, : len(f)], mask[i, : len(f)] = f, 1
    bos = np.asarray([corpus["tags"][lang] for lang in LANGS], np.int32)  # [rows]
    return loaded.model, x, mask, bos


def _check_per_language(ids, model, x, mask, bos, **generate_kwargs):
    """ids of a mixed batch == model.generate on each language's rows with a scalar BOS."""
    assert np.array_equal(ids[:, 1], bos), "the first generated token is the row's tag"
    for tag in np.unique(bos):
        rows = np.flatnonzero(bos == tag)
        expected = model.generate(
            x[rows],
            mask[rows],
            max_length=MAX_LENGTH,
            forced_bos_token_id=int(tag),
            buckets=None,
            **generate_kwargs,
        )
        np.testing.assert_array_equal(ids[rows, : expected.shape[1]], expected)
        assert np.all(ids[rows, expected.shape[1] :] == model.config.pad_token_id)


@pytest.mark.parametrize("num_devices", [4])
def test_sharded_generator_forces_each_rows_tag_in_one_compile(batch, num_devices):
    model, x, mask, bos = batch
    settings = resolve_settings(model, max_length=MAX_LENGTH)
    gen = ShardedGenerator(model, settings, num_devices)
    ids = gen(x, mask, bos)
    _check_per_language(ids, model, x, mask, bos)
    swapped = np.where(bos == bos[0], bos[1], bos[0]).astype(np.int32)  # de <-> fr
    again = gen(x, mask, swapped)
    _check_per_language(again, model, x, mask, swapped)
    assert gen.compile_count == 1 and gen.shapes == [x.shape]
    assert gen.compile_seconds > 0
    gen(x, mask)  # None: nothing forced (ids checked in test_evaluate), same compiled search
    assert gen.compile_count == 1
    with pytest.raises(ValueError, match=r"forced_bos: expected .* shape \(8,\)"):
        gen(x, mask, bos[:3])


def test_local_generator_fused_search_per_row_tags_and_compile_time(batch):
    """The fused search (LocalGenerator; here a length bonus): the same per-row forcing in one
    compile per shape, and its compile time is measured (no longer 0)."""
    model, x, mask, bos = batch
    settings = resolve_settings(model, max_length=MAX_LENGTH)
    gen = LocalGenerator(model, settings, DecoderChoice("attention", length_bonus=0.5))
    ids = gen(x, mask, bos)
    _check_per_language(ids, model, x, mask, bos, length_bonus=0.5)
    first = gen.compile_seconds
    swapped = np.where(bos == bos[0], bos[1], bos[0]).astype(np.int32)  # de <-> fr
    _check_per_language(gen(x, mask, swapped), model, x, mask, swapped, length_bonus=0.5)
    assert first > 0 and gen.compile_seconds == first  # no compile for other languages
    assert gen.compile_count == 1 and gen.shapes == [x.shape]
    ctc = LocalGenerator(model, settings, DecoderChoice("ctc_greedy"))
    ctc(x, mask, bos)  # CTC decoders make no language tag: the forced BOS is ignored
    assert ctc.compile_seconds > 0


def test_eval_mixed_languages_equals_one_run_per_language(corpus, model_dir, tmp_path):
    """evaluate() on the mixed manifest: hypotheses equal one run per language with --tgt_lang,
    one compile (and one trace) per shape for both languages."""
    traces = sum(search.TRACE_COUNTS.values())
    mixed = ev.evaluate(model_dir, str(corpus["root"] / "test.tsv"), str(tmp_path / "m"), **RUN)
    shapes = mixed["compiled_shapes"]
    assert len(shapes) == len({tuple(s) for s in shapes}) == 2  # two buckets
    assert mixed["compiles"] == len(shapes)
    assert sum(search.TRACE_COUNTS.values()) - traces == len(shapes)
    assert mixed["timing"]["compile_time_s"] > 0
    assert mixed["utterances"]["scored"] == len(LANGS)
    with open(tmp_path / "m" / "hypotheses.tsv", newline="") as f:
        got = {r["id"]: r["hypothesis"] for r in csv.DictReader(f, delimiter="\t")}
    for lang in ("de", "fr"):
        manifest = str(corpus["root"] / f"test_{lang}.tsv")
        ev.evaluate(model_dir, manifest, str(tmp_path / lang), tgt_lang=lang, **RUN)
        with open(tmp_path / lang / "hypotheses.tsv", newline="") as f:
            for r in csv.DictReader(f, delimiter="\t"):
                assert got[r["id"]] == r["hypothesis"], (lang, r["id"])
    assert len(set(got.values())) > 2, "hypotheses should depend on the audio"
    assert jax.process_count() == 1
