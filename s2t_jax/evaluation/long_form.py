"""`eval.py --long_form`: WER (and BLEU) on whole recordings, and word-time errors.

The manifest lists whole recordings (id, audio, n_frames, tgt_text = the recording's full
reference). Each recording is cut by the chosen segmenter (pauses, or back-to-back windows),
its segments decoded as transcribe decodes them, and the hypotheses joined; the score is over
whole recordings, so segmentation errors (a word cut in two, a sentence dropped) count, as in
the evaluation of MuST-C talks or long recordings. For ST, BLEU is computed on whole
recordings too (the re-segmentation of hypotheses against reference segments is not done).

With a `<manifest stem>_words.json` beside the manifest (the demo's `longform_words.json`) and
a model with a CTC head, each hypothesis word matched to a reference word (by the WER
alignment) gives |start - true start| and |end - true end|; results.json reports their median
and 90th percentile.
"""

from __future__ import annotations

import json
import os
import time

import jiwer
import numpy as np

from s2t_jax.data.manifest import read_manifest
from s2t_jax.evaluation import metrics


def word_time_errors(reference_words, hypothesis_words) -> dict:
    """Matched words' |start| and |end| errors (seconds): median and p90, and the count."""
    ref = [w["word"] for w in reference_words]
    hyp = [w["word"] for w in hypothesis_words]
    if not ref or not hyp:
        return {"matched": 0}
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    starts, ends = [], []
    for chunk in out.alignments[0]:
        if chunk.type != "equal":
            continue
        for i, j in zip(
            range(chunk.ref_start_idx, chunk.ref_end_idx),
            range(chunk.hyp_start_idx, chunk.hyp_end_idx),
        ):
            starts.append(abs(hypothesis_words[j]["start"] - reference_words[i]["start"]))
            ends.append(abs(hypothesis_words[j]["end"] - reference_words[i]["end"]))
    return {"matched": len(starts), "start": starts, "end": ends}


def _summary(values) -> dict | None:
    if not values:
        return None
    v = np.asarray(values)
    return {"median_s": float(np.median(v)), "p90_s": float(np.percentile(v, 90))}


def evaluate_long_form(
    model,
    processor,
    manifest: str,
    output_dir: str,
    *,
    segmenter: str = "pause",
    window_seconds: float | None = None,
    batch_size: int = 8,
    normalizer: metrics.TextNormalizer | None = None,
    task: str = "asr",
    **generate_kwargs,
) -> dict:
    """Decodes every recording of `manifest` whole; writes hypotheses.jsonl and results.json."""
    from s2t_jax.decoding.transcribe import transcribe_segments

    started = time.perf_counter()
    normalizer = normalizer or metrics.TextNormalizer()
    manifest = os.path.abspath(manifest)
    root = os.path.dirname(manifest)
    rows = read_manifest(manifest)
    paths = [r.audio if os.path.isabs(r.audio) else os.path.join(root, r.audio) for r in rows]
    skipped = {}
    segments = transcribe_segments(
        model,
        processor,
        paths,
        batch_size=batch_size,
        segmenter=segmenter,
        window_seconds=window_seconds,
        timestamps=True,
        on_error=lambda path, err: skipped.__setitem__(path, str(err)),
        **generate_kwargs,
    )
    truth_path = os.path.splitext(manifest)[0] + "_words.json"
    truth = {}
    if os.path.exists(truth_path):
        with open(truth_path) as f:
            truth = json.load(f)
    os.makedirs(output_dir, exist_ok=True)
    refs, hyps, starts, ends = [], [], [], []
    with open(os.path.join(output_dir, "hypotheses.jsonl"), "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            if i not in segments:
                continue
            parts = segments[i]
            hypothesis = " ".join(s["text"] for s in parts if s["text"])
            refs.append(row.tgt_text)
            hyps.append(hypothesis)
            record = {
                "id": row.id,
                "reference": row.tgt_text,
                "hypothesis": hypothesis,
                "segments": parts,
            }
            words = [w for s in parts for w in (s.get("words") or [])]
            if row.id in truth and words:
                errors = word_time_errors(truth[row.id]["words"], words)
                starts += errors.get("start", [])
                ends += errors.get("end", [])
                record["matched_words"] = errors["matched"]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    results = {
        "manifest": manifest,
        "long_form": True,
        "segmenter": segmenter,
        "task": task,
        "recordings": {"manifest": len(rows), "scored": len(refs), "skipped": len(skipped)},
        "skipped": [{"audio": k, "reason": v} for k, v in skipped.items()],
        "metrics": metrics.score(refs, hyps, normalizer, False),
        "segments": sum(len(segments[i]) for i in segments),
        "word_times": {
            "source": truth_path if truth else None,
            "matched_words": len(starts),
            "start": _summary(starts),
            "end": _summary(ends),
        },
        "wall_time_s": time.perf_counter() - started,
    }
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results
