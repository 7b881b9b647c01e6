"""Batch evaluation of a checkpoint on a manifest: hypotheses, WER / BLEU / chrF, resumable.

`evaluate(checkpoint, manifest, output_dir, ...)` is what eval.py runs. It decodes every
utterance once with the jitted search of `decoding.search.make_generate_fn`, sharded over all
devices of all processes (`ShardedGenerator`), and writes hypotheses.tsv and results.json
(process 0 only; outputs.py). The pieces, each in its module:

  evaluation/checkpoint.py  the checkpoint: a model dir, a fairseq .pt or a training workdir;
  sources.py              the front end: tokenizer and features, and where they come from;
  items.py                the manifest's utterances;
  batches.py              global batches, loaded per process, padded to buckets;
  outputs.py              the output files, appended and fsynced as batches finish;
  metrics.py              WER, BLEU, chrF.

Multilingual models: each utterance's own target-language tag (its tgt_lang, or `tgt_lang` for
all) is forced as the first token. The tag is a per-row input of the search, so batches mix
languages and one compile per input shape serves all of them (results.json: `compiles`).

Resume: rerunning with the same output_dir reads the ids already in hypotheses.tsv (a torn last
line is cut off) and decodes only the others; metrics are computed over all rows. A run.json
fingerprint (checkpoint, manifest hash, generation settings, tokenizer source) refuses to mix
rows of different settings.

Bad input: a manifest row that cannot be parsed (wrong number of fields, bytes that are not
UTF-8, a bad n_frames) and an audio file that cannot be read are each logged, listed in
results.json (`bad_rows`, `skipped`) with file, line or id and the reason, and skipped; the run
scores the rest. `strict=True` (`eval.py --strict`) makes the first of either fatal instead.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import time
from collections.abc import Sequence

import jax
import numpy as np
from tqdm import tqdm

from s2t_jax.decoding.buckets import DEFAULT_BUCKETS
from s2t_jax.decoding.settings import resolve_settings
from s2t_jax.decoding.sharded import ShardedGenerator
from s2t_jax.evaluation import metrics, outputs
from s2t_jax.evaluation.batches import (
    BAD,
    DUMMY,
    decode_batch,
    decode_reason,
    load_rows,
    plan_batches,
)
from s2t_jax.evaluation.checkpoint import load_checkpoint
from s2t_jax.evaluation.decoders import DecoderChoice, LocalGenerator
from s2t_jax.evaluation.items import manifest_sha256, read_items
from s2t_jax.evaluation.sources import choose_frontend
from s2t_jax.parallel.hosts import broadcast_from_process_0

log = logging.getLogger(__name__)


def evaluate(
    checkpoint: str,
    manifest: str,
    output_dir: str,
    *,
    data_config: str | None = None,
    num_beams: int | None = None,
    max_length: int | None = None,
    batch_size: int = 16,
    buckets: Sequence[int] | None = DEFAULT_BUCKETS,
    task: str = "asr",
    wer_tokenizer: str = "none",
    wer_lowercase: bool = False,
    wer_remove_punctuation: bool = False,
    wer_char_level: bool = False,
    char_bleu: bool = False,
    tgt_lang: str | None = None,
    num_devices: int = 0,
    dtype: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    strict: bool = False,
    decoder: DecoderChoice | None = None,
    maxlenratio: float | None = None,
    minlenratio: float | None = None,
) -> dict:
    """Decodes `manifest` with `checkpoint` and scores it; returns results.json's content
    (on process 0; other processes return {}).

    batch_size is global (utterances per step over all devices; rounded up to a multiple of the
    device count). num_beams / max_length default to the checkpoint's generation settings.
    WER, BLEU and chrF are all computed when there are references; `task` ("asr" or "st")
    names the headline metric (WER or BLEU). `num_devices` (0: all) limits the mesh.
    `strict`: a bad manifest row or unreadable audio file ends the run (default: reported and
    skipped). `decoder`: joint CTC/attention decoding, LM fusion, CTC greedy or attention
    rescoring (evaluation/decoders.py; one process); None: the sharded attention search.
    `maxlenratio` / `minlenratio`: ESPnet's length limits from each utterance's encoder length
    (attention search only; decoding/settings.py).
    """
    if task not in ("asr", "st"):
        raise ValueError(f"task={task!r}: expected 'asr' or 'st'")
    started = time.perf_counter()
    manifest, output_dir = os.path.abspath(manifest), os.path.abspath(output_dir)
    normalizer = metrics.TextNormalizer(
        wer_tokenizer, wer_lowercase, wer_remove_punctuation, wer_char_level
    )
    loaded = load_checkpoint(checkpoint, dtype)
    config = loaded.model.config
    frontend = choose_frontend(loaded, manifest, data_config)
    expected = config.input_feat_per_channel * config.input_channels
    if frontend.num_mel_bins != expected:
        raise ValueError(
            f"{frontend.source}: {frontend.num_mel_bins} features per frame, the model takes "
            f"{expected}"
        )
    settings = resolve_settings(loaded.model, num_beams=num_beams, max_length=max_length)
    settings = dataclasses.replace(
        settings,
        num_return_sequences=1,
        forced_bos_token_id=None,
        maxlenratio=maxlenratio,
        minlenratio=minlenratio,
    )
    ratios = maxlenratio is not None or minlenratio is not None
    if ratios and decoder is not None and decoder.decoder != "attention":
        raise ValueError(
            f"maxlenratio / minlenratio limit the attention search, not decoder={decoder.decoder!r}"
        )
    bad_rows = []

    def report(bad):
        log.warning("skipping manifest row %s", bad)
        bad_rows.append(bad)

    items = read_items(manifest, frontend.audio_root, None if strict else report)
    fingerprint = {
        "checkpoint": os.path.abspath(checkpoint),
        "step": loaded.step,
        "manifest": manifest,
        "manifest_sha256": manifest_sha256(manifest),
        "frontend": frontend.source,
        "generation": dataclasses.asdict(settings),
        "tgt_lang": tgt_lang,
        "dtype": config.dtype,
    }
    decoder = decoder or DecoderChoice()
    decoder.check()
    if not decoder.plain:
        fingerprint["decoder"] = dataclasses.asdict(decoder)
    run = Run(items, frontend, normalizer, output_dir, started, strict)
    run.bad_rows = bad_rows
    run.plan(fingerprint, overwrite, tgt_lang)
    run.load_seconds = time.perf_counter() - started
    if run.todo:
        if decoder.plain:
            generator = ShardedGenerator(loaded.model, settings, num_devices)
        else:
            generator = LocalGenerator(loaded.model, settings, decoder)
        max_frames = config.max_source_positions * 2**config.num_conv_layers
        run.decode(generator, batch_size, buckets, max_frames, progress)
    if jax.process_index() != 0:
        return {}
    body = run.results(char_bleu)
    results = {
        "checkpoint": fingerprint["checkpoint"],
        "checkpoint_kind": loaded.kind,
        "step": loaded.step,
        "manifest": manifest,
        "task": task,
        "primary_metric": ("wer" if task == "asr" else "bleu") if body["metrics"] else None,
        **body,
        "generation": fingerprint["generation"],
        "decoder": dataclasses.asdict(decoder),
    }
    outputs.write_results(output_dir, results)
    return results


class Run:
    """One evaluation's state: what to decode, what was skipped and why, counts and timings."""

    def __init__(
        self, items, frontend, normalizer, output_dir: str, started: float, strict: bool = False
    ):
        self.items, self.frontend, self.normalizer = items, frontend, normalizer
        self.strict = strict
        self.bad_rows = []  # manifest rows that could not be parsed (data.manifest.BadRow)
        self.output_dir, self.started = output_dir, started
        self.has_refs = bool(items) and items[0].reference is not None
        self.hyp_path = os.path.join(output_dir, outputs.HYPOTHESES_FILE)
        self.is_main = jax.process_index() == 0
        self.skipped: dict[str, str] = {}  # id -> reason
        self.first: dict[str, int] = {}  # id -> index of its first row in the manifest
        self.todo: list[int] = []
        self.forced: dict[int, int | None] = {}  # item -> forced language token
        self.decoded, self.decoded_seconds = 0, 0.0
        self.load_seconds = self.loop_seconds = 0.0
        self.generator: ShardedGenerator | None = None
        self.batch_size = 0

    def plan(self, fingerprint: dict, overwrite: bool, tgt_lang: str | None) -> None:
        """First row of each id, minus the ids a previous run scored (process 0 reads them and
        tells the others), each with its forced target-language token."""
        for i, item in enumerate(self.items):
            if item.id in self.first:
                self.skipped.setdefault(item.id, "duplicate id (its first row is used)")
            else:
                self.first[item.id] = i
        done, error = set(), ""
        if self.is_main:
            done, error = outputs.prepare_output(self.output_dir, fingerprint, overwrite)
        ids = [self.items[i].id for i in self.first.values()]
        flags = np.asarray([bool(error)] + [i in done for i in ids], np.int32)
        flags = broadcast_from_process_0(flags)
        if flags[0]:
            raise ValueError(error or "process 0 refused the output directory (see its log)")
        lang_id = self.frontend.lang_id
        if tgt_lang is not None and lang_id is None:
            raise ValueError(f"tgt_lang={tgt_lang!r}, but {self.frontend.source} has no tags")
        for i, already in zip(self.first.values(), flags[1:]):
            if already:
                continue
            lang = tgt_lang if tgt_lang is not None else self.items[i].tgt_lang
            try:
                self.forced[i] = int(lang_id(lang)) if lang_id and lang else None
            except KeyError as e:
                self.skipped[self.items[i].id] = f"unknown target language: {e}"
                continue
            self.todo.append(i)

    def decode(self, generator: ShardedGenerator, batch_size, buckets, max_frames, progress):
        """Every planned utterance through the sharded search, batch by batch; process 0
        appends each batch's rows to hypotheses.tsv as soon as it is decoded."""
        self.generator = generator
        self.batch_size = generator.round_batch(batch_size)
        local = generator.local_rows(self.batch_size)
        batches = plan_batches(self.items, self.todo, self.forced, self.batch_size)
        writer = outputs.HypothesisWriter(self.hyp_path) if self.is_main else None
        show = progress and self.is_main
        bar = tqdm(total=len(self.todo), unit="utt", desc="eval", disable=None if show else True)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # loads batch k+1 during k

        def load(k):
            rows = batches[k][1][local]
            return pool.submit(load_rows, self.frontend, self.items, rows, max_frames)

        start = time.perf_counter()
        try:
            pending = load(0)
            for k, (bos, rows) in enumerate(batches):
                loaded_rows = pending.result()
                if k + 1 < len(batches):
                    pending = load(k + 1)
                ids, status, seconds, reasons = decode_batch(
                    generator, loaded_rows, self.frontend.num_mel_bins, buckets, bos[local]
                )
                out = self._collect(rows, ids, status, seconds, reasons)
                if writer is not None:
                    writer.append(out)
                bar.update(sum(1 for i in rows if i >= 0))
                bar.set_postfix(skipped=len(self.skipped), refresh=False)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            if writer is not None:
                writer.close()
        self.loop_seconds = time.perf_counter() - start

    def _collect(self, rows, ids, status, seconds, reasons) -> list[dict]:
        """One decoded global batch -> hypothesis rows (process 0) and skip reasons (all)."""
        out = []
        for r, i in enumerate(rows):
            if status[r] == DUMMY:
                continue
            item = self.items[i]
            if status[r] == BAD:
                reason = decode_reason(reasons[r])
                if self.strict:  # every process sees the gathered status, so all stop here
                    raise ValueError(f"strict: utterance {item.id}: {reason}")
                log.warning("skipping utterance %s: %s", item.id, reason)
                self.skipped[item.id] = reason
                continue
            self.decoded += 1
            self.decoded_seconds += float(seconds[r])
            if self.is_main:
                row = {
                    "id": item.id,
                    "reference": outputs.clean(item.reference or ""),
                    "hypothesis": self.frontend.decode(ids[r]),
                    "seconds": f"{float(seconds[r]):.3f}",
                }
                out.append(self._with_errors(row))
        return out

    def _with_errors(self, row: dict) -> dict:
        if not self.has_refs:
            return {**row, "errors": "", "ref_words": ""}
        norm = self.normalizer
        edits, words = metrics.utterance_errors(norm(row["reference"]), norm(row["hypothesis"]))
        return {**row, "errors": str(edits), "ref_words": str(words)}

    def results(self, char_bleu: bool) -> dict:
        """Scores every row, old and new; rewrites hypotheses.tsv in manifest order."""
        by_id = {r["id"]: r for r in outputs.read_hypotheses(self.hyp_path)}
        rows = [self._with_errors(by_id[k]) for k in self.first if k in by_id]
        outputs.write_hypotheses(self.hyp_path, rows)
        refs = [r["reference"] for r in rows] if self.has_refs else []
        hyps = [r["hypothesis"] for r in rows]
        order = {item.id: n for n, item in reversed(list(enumerate(self.items)))}
        gen = self.generator
        compile_seconds = gen.compile_seconds if gen else 0.0
        decode_seconds = max(self.loop_seconds - compile_seconds, 0.0)
        return {
            "output_dir": self.output_dir,
            "frontend": self.frontend.source,
            "metrics": metrics.score(refs, hyps, self.normalizer, char_bleu),
            "wer_normalizer": dataclasses.asdict(self.normalizer),
            "bleu_tokenize": "char" if char_bleu else "13a",
            "utterances": {
                "manifest": len(self.items),
                "scored": len(rows),
                "decoded_this_run": self.decoded,
                "resumed": len(rows) - self.decoded,
                "skipped": len(self.skipped),
                "bad_rows": len(self.bad_rows),
            },
            "audio_hours": sum(float(r["seconds"]) for r in rows) / 3600.0,
            "skipped": [
                {"id": k, "reason": self.skipped[k]} for k in sorted(self.skipped, key=order.get)
            ],
            "bad_rows": [dataclasses.asdict(b) for b in self.bad_rows],
            "timing": {
                "wall_time_s": time.perf_counter() - self.started,
                "load_time_s": self.load_seconds,
                "compile_time_s": compile_seconds,
                "decode_time_s": decode_seconds,
                "decoded_audio_s": self.decoded_seconds,
                "real_time_factor": (
                    decode_seconds / self.decoded_seconds if self.decoded_seconds else None
                ),
                "utterances_per_s": self.decoded / decode_seconds if decode_seconds else None,
            },
            "compiled_shapes": [list(s) for s in gen.shapes] if gen else [],
            # Ahead-of-time compiles of the search: one per shape, for every target language.
            "compiles": getattr(gen, "compile_count", None) if gen else 0,
            "devices": {
                "count": gen.num_devices if gen else 0,
                "processes": jax.process_count(),
                "kind": jax.devices()[0].device_kind,
            },
            "batch_size": self.batch_size or None,
        }
