"""`eval.py --long_form`: WER and BLEU on whole recordings, ST BLEU after re-segmentation, and
word-time errors.

The manifest lists whole recordings (id, audio, n_frames, tgt_text = the recording's full
reference, optionally tgt_lang). Each recording is cut by the chosen segmenter (pauses, or
back-to-back windows), its segments decoded as transcribe decodes them, and the hypotheses
joined; the score is over whole recordings, so segmentation errors (a word cut in two, a
sentence dropped) count, as in the evaluation of MuST-C talks or long recordings.

Speech translation (a MuST-C talk): sentence-level BLEU needs the hypothesis in the
reference's segments, which the segmenter's cuts are not. With a
`<manifest stem>_segments.json` beside the manifest, {recording id: [{"offset", "duration"
(seconds), "tgt_text"}, ...]} (what `prep_mustc --talks` writes), each recording's hypothesis
words are re-cut into its reference segments by minimum edit distance (resegment.py, as
mwerSegmenter does) and BLEU / chrF are computed on those pieces ("resegmented" in
results.json); the gold segments' audio is also translated one segment at a time and scored
("gold_segmentation"), the upper bound that a perfect segmenter would reach.

Multilingual models get each recording's target-language tag (its tgt_lang, or `tgt_lang` for
all) forced as the first token of every segment.

With a `<manifest stem>_words.json` beside the manifest (the demo's `longform_words.json`) and
a model with a CTC head, each hypothesis word matched to a reference word (by the WER
alignment) gives |start - true start| and |end - true end|; results.json reports their median
and 90th percentile.
"""

from __future__ import annotations

import json
import os
import re
import time
import unicodedata

import jiwer
import numpy as np

from s2t_jax.data.manifest import read_manifest
from s2t_jax.evaluation import metrics
from s2t_jax.evaluation.resegment import resegment


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


def alignment_key(word: str) -> str:
    """The form in which re-segmentation compares words: lower-cased, without punctuation (so
    "Talk," matches "talk"); a word of punctuation only is kept as it is."""
    kept = "".join(ch for ch in word.lower() if not unicodedata.category(ch).startswith("P"))
    return kept or word


def read_reference_segments(path: str, ids) -> dict[str, list[dict]]:
    """The sidecar {recording id: [{"offset", "duration", "tgt_text"}]}, checked for `ids`."""
    with open(path, encoding="utf-8") as f:
        try:
            table = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from e
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected an object {{recording id: [segments]}}")
    for rid in ids:
        segs = table.get(rid)
        if not isinstance(segs, list) or not segs:
            raise ValueError(f"{path}: recording {rid!r} has no list of reference segments")
        for n, seg in enumerate(segs):
            if not isinstance(seg, dict) or not isinstance(seg.get("tgt_text"), str):
                raise ValueError(f'{path}: {rid!r} segment {n}: expected a "tgt_text" string')
            for field in ("offset", "duration"):
                value = seg.get(field)
                if not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(
                        f"{path}: {rid!r} segment {n}: {field!r} must be seconds >= 0, got "
                        f"{value!r}"
                    )
    return table


def language_tag_ids(tokenizer) -> dict[str, int]:
    """{xx: id of <lang:xx>} of a tokenizer: its lang_code_to_id, or the <lang:xx> entries of
    its vocabulary (an export with other languages than MuST-C's eight holds them as extra
    special tokens, which decoding with skip_special_tokens drops)."""
    codes = dict(getattr(tokenizer, "lang_code_to_id", None) or {})
    for token, i in tokenizer.get_vocab().items():
        m = re.fullmatch(r"<lang:([^>]+)>", token)
        if m:
            codes.setdefault(m.group(1), int(i))
    return codes


def translate_pieces(model, processor, pieces, forced, batch_size: int, **generate_kwargs):
    """Waveform pieces [samples] (at the extractor's rate), each with its forced first token
    (or None) -> their decoded texts; a piece shorter than one frame gives ""."""
    from s2t_jax.frontend.fbank import FRAME_SECONDS

    extractor = processor.feature_extractor
    rate = extractor.sampling_rate
    out = [""] * len(pieces)
    shortest = int(round(FRAME_SECONDS * rate))
    for tag in sorted({forced[i] for i in range(len(pieces))}, key=str):  # one tag per batch
        todo = [i for i, p in enumerate(pieces) if forced[i] == tag and len(p) >= shortest]
        todo.sort(key=lambda i: len(pieces[i]))  # little padding per batch
        kwargs = dict(generate_kwargs)
        if tag is not None:
            kwargs["forced_bos_token_id"] = tag
        for first in range(0, len(todo), batch_size):
            batch = todo[first : first + batch_size]
            inputs = extractor(
                [pieces[i] for i in batch], padding=True, sampling_rate=rate, return_tensors="np"
            )
            features, mask = inputs["input_features"], inputs.get("attention_mask")
            ids = np.asarray(model.generate(features, mask, **kwargs))  # [batch, length]
            texts = processor.batch_decode(ids, skip_special_tokens=True)
            for i, text in zip(batch, texts):
                out[i] = " ".join(text.split())
    return out


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
    tgt_lang: str | None = None,
    char_bleu: bool = False,
    **generate_kwargs,
) -> dict:
    """Decodes every recording of `manifest` whole; writes hypotheses.jsonl and results.json.

    With a `<manifest stem>_segments.json` beside the manifest (see the module docstring),
    also re-segments each hypothesis to the reference segments and scores it ("resegmented"),
    and translates the gold segments ("gold_segmentation")."""
    from s2t_jax.decoding.transcribe import transcribe_segments
    from s2t_jax.frontend.audio import load_audio

    started = time.perf_counter()
    normalizer = normalizer or metrics.TextNormalizer()
    manifest = os.path.abspath(manifest)
    root = os.path.dirname(manifest)
    rows = read_manifest(manifest)
    paths = [r.audio if os.path.isabs(r.audio) else os.path.join(root, r.audio) for r in rows]
    stem = os.path.splitext(manifest)[0]
    sidecar = stem + "_segments.json"
    references = (
        read_reference_segments(sidecar, [r.id for r in rows]) if os.path.exists(sidecar) else None
    )
    skipped = {}
    tags = language_tag_ids(processor.tokenizer)
    forced = {}  # row index -> forced first token (None: nothing forced)
    for i, row in enumerate(rows):
        lang = tgt_lang or row.tgt_lang
        if tags and lang:
            if lang not in tags:
                skipped[paths[i]] = f"unknown target language {lang!r} (tags: {sorted(tags)})"
                continue
            forced[i] = tags[lang]
        else:
            forced[i] = None
    if tgt_lang is not None and not tags:
        raise ValueError(f"tgt_lang={tgt_lang!r}, but the model's tokenizer has no <lang:xx> tags")
    segments = {}
    for tag in sorted(set(forced.values()), key=str):  # one decode per target language
        group = [i for i in forced if forced[i] == tag]
        kwargs = dict(generate_kwargs)
        if tag is not None:
            kwargs["forced_bos_token_id"] = tag
        decoded = transcribe_segments(
            model,
            processor,
            [paths[i] for i in group],
            batch_size=batch_size,
            segmenter=segmenter,
            window_seconds=window_seconds,
            timestamps=True,
            on_error=lambda path, err: skipped.__setitem__(path, str(err)),
            **kwargs,
        )
        for k, parts in decoded.items():
            segments[group[k]] = parts
    truth_path = stem + "_words.json"
    truth = {}
    if os.path.exists(truth_path):
        with open(truth_path) as f:
            truth = json.load(f)

    gold = {}  # row index -> gold segments' hypotheses
    if references is not None:
        rate = processor.feature_extractor.sampling_rate
        pieces, owners = [], []
        for i in sorted(segments):
            wave = load_audio(paths[i], rate)
            for seg in references[rows[i].id]:
                a = int(seg["offset"] * rate)
                pieces.append(wave[a : a + int(seg["duration"] * rate)])
                owners.append(i)
        texts = translate_pieces(
            model, processor, pieces, [forced[i] for i in owners], batch_size, **generate_kwargs
        )
        for i, text in zip(owners, texts):
            gold.setdefault(i, []).append(text)

    os.makedirs(output_dir, exist_ok=True)
    refs, hyps, starts, ends = [], [], [], []
    seg_refs, reseg_hyps, gold_hyps, distance = [], [], [], 0
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
            if forced[i] is not None:
                record["forced_bos_token_id"] = forced[i]
            if references is not None:
                ref_texts = [s["tgt_text"] for s in references[row.id]]
                pieces, cost = resegment(hypothesis, ref_texts, key=alignment_key)
                seg_refs += ref_texts
                reseg_hyps += pieces
                gold_hyps += gold[i]
                distance += cost
                record["reference_segments"] = ref_texts
                record["resegmented"] = pieces
                record["gold_segmentation"] = gold[i]
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
        "primary_metric": ("wer" if task == "asr" else "bleu") if refs else None,
        "recordings": {"manifest": len(rows), "scored": len(refs), "skipped": len(skipped)},
        "skipped": [{"audio": k, "reason": v} for k, v in skipped.items()],
        "metrics": metrics.score(refs, hyps, normalizer, char_bleu),
        "segments": sum(len(segments[i]) for i in segments),
        "resegmented": None,
        "gold_segmentation": None,
        "word_times": {
            "source": truth_path if truth else None,
            "matched_words": len(starts),
            "start": _summary(starts),
            "end": _summary(ends),
        },
        "wall_time_s": time.perf_counter() - started,
    }
    if references is not None:
        results["resegmented"] = {
            "source": sidecar,
            "reference_segments": len(seg_refs),
            "edit_distance": distance,  # summed over recordings, on alignment_key words
            "metrics": metrics.score(seg_refs, reseg_hyps, normalizer, char_bleu),
        }
        results["gold_segmentation"] = {
            "segments": len(gold_hyps),
            "metrics": metrics.score(seg_refs, gold_hyps, normalizer, char_bleu),
        }
    with open(os.path.join(output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results
