"""Long-form transcription on the demo model: segmenters, WER, word times, throughput.

Reproduces the tables of issue 17's long-form work (notes in the README's "Decoders and long
audio" section). Needs a demo corpus made with `--long_form` (and, for `--set dev`, the dev
long-form set: `python -m s2t_jax.data.prep.long_form --corpus DIR --split dev`) and the
demo model exported to a model directory. One process loads the model once and decodes every
configuration in turn.

    python bench/long_form.py --model /work/demo_run/model --corpus /work/demo_run/corpus \\
        --out /tmp/lf --tables wer,segments,errors,throughput
    python bench/long_form.py ... --set dev --tables segments,times

Tables:
  wer         WER on whole recordings per segmenter, attention beam 5 and joint (ctc 0.3)
  segments    how each segmenter's segments hold the true sentences (eSpeak word times):
              alone / sharing a segment / split over segments / noise-only segments
  errors      where the errors are: per class of sentence, long-form errors against the
              same sentences' errors when decoded pre-cut (needs --precut DIR of eval.py
              results on test.tsv with the same decoder)
  times       signed and absolute word-time errors (median / p90), start and end
  throughput  seconds of audio per second of wall time, compiles excluded (a warm-up pass
              first), `--repeats` passes
  oracle      each sentence cut from the long recordings at its TRUE speech span (eSpeak's
              word times) plus a margin of the pause around it (at most to the middle of the
              pause), decoded as segments are: what the segment edges alone cost. Analysis
              only; nothing is chosen from it.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# name: (segmenter, segmenter_options). pause_before is the detector as it was before this
# work (a floor over the whole 4 s window; segments cut mid-pause and not trimmed; cuts at
# pauses of 0.3 s); pause_trim adds the trimming to a 0.2 s margin, pause_floor_trim the
# two-sided floor, pause (today's default) the 0.4 s cut. pause_floor has the two-sided floor
# alone. The VAD libraries' rows use today's cutting rules.
SEGMENTERS = {
    "fixed": ("fixed", None),
    "pause_before": ("pause", {"floor_sides": 1, "margin_seconds": 1e3, "cut_pause_seconds": 0.3}),
    "pause_trim": ("pause", {"floor_sides": 1, "cut_pause_seconds": 0.3}),
    "pause_floor": ("pause", {"margin_seconds": 1e3, "cut_pause_seconds": 0.3}),
    "pause_floor_trim": ("pause", {"cut_pause_seconds": 0.3}),
    "pause": ("pause", None),
    "webrtc0": ("webrtc", {"aggressiveness": 0}),
    "webrtc1": ("webrtc", {"aggressiveness": 1}),
    "webrtc2": ("webrtc", {"aggressiveness": 2}),
    "webrtc3": ("webrtc", {"aggressiveness": 3}),
    "silero": ("silero", None),
}
DECODERS = {"attention": {}, "joint0.3": {"ctc_weight": 0.3}}


def sentences_of(truth_row) -> list[dict]:
    """The recording's sentences with their speech spans (first word start, last word end)."""
    out, k = [], 0
    words = truth_row["words"]
    for u in truth_row["utterances"]:
        n = len(u["text"].split())
        span = words[k : k + n]
        k += n
        out.append({"id": u["id"], "text": u["text"], "s": span[0]["start"], "e": span[-1]["end"]})
    return out


def classify(sentences, segments) -> tuple[list[str], list[list[int]]]:
    """Each sentence: alone / shared / split / missed; each segment: the sentences it holds."""
    held = [
        [i for i, s in enumerate(sentences) if min(g["end"], s["e"]) - max(g["start"], s["s"]) > 0]
        for g in segments
    ]
    classes = []
    for i in range(len(sentences)):
        over = [j for j, h in enumerate(held) if i in h]
        if not over:
            classes.append("missed")
        elif len(over) > 1:
            classes.append("split")
        else:
            classes.append("shared" if len(held[over[0]]) > 1 else "alone")
    return classes, held


def _errors(ref: str, hyp: str) -> int:
    import jiwer

    if not ref.split():
        return len(hyp.split())
    o = jiwer.process_words(ref, hyp)
    return o.substitutions + o.deletions + o.insertions


def error_table(hypotheses_path, truth, precut: dict | None) -> dict:
    """Errors by class of sentence. Sentences that share segments are scored as one group (the
    text of their segments against their joined references); noise-only segments' words are
    insertions of their own class."""
    words, errors, before = collections.Counter(), collections.Counter(), collections.Counter()
    count = collections.Counter()
    for line in open(hypotheses_path):
        rec = json.loads(line)
        sents = sentences_of(truth[rec["id"]])
        classes, held = classify(sents, rec["segments"])
        for c in classes:
            count[c] += 1
        noise = [g for g, h in zip(rec["segments"], held) if not h]
        errors["noise-only segments"] += sum(len(g["text"].split()) for g in noise)
        parent = list(range(len(sents)))  # sentences joined by a segment form one group

        def root(x, parent=parent):
            while parent[x] != x:
                x = parent[x]
            return x

        for h in held:
            for i in h[1:]:
                parent[root(i)] = root(h[0])
        groups = collections.defaultdict(list)
        for i in range(len(sents)):
            groups[root(i)].append(i)
        for r, members in groups.items():
            ref = " ".join(sents[i]["text"] for i in members)
            hyp = " ".join(
                g["text"] for g, h in zip(rec["segments"], held) if h and root(h[0]) == r
            )
            kinds = {classes[i] for i in members}
            c = "split" if "split" in kinds else "shared" if "shared" in kinds else min(kinds)
            words[c] += len(ref.split())
            errors[c] += _errors(ref, hyp)
            if precut is not None:
                before[c] += sum(_errors(sents[i]["text"], precut[sents[i]["id"]]) for i in members)
    return {
        "sentences": dict(count),
        "words": dict(words),
        "errors": dict(errors),
        "precut": dict(before),
    }


def time_errors(hypotheses_path, truth) -> dict:
    """Signed (hypothesis - truth) start and end errors of words matched by the WER alignment."""
    import jiwer

    signed = {"start": [], "end": []}
    for line in open(hypotheses_path):
        rec = json.loads(line)
        hyp = [w for g in rec["segments"] for w in (g.get("words") or [])]
        ref = truth[rec["id"]]["words"]
        if not hyp:
            continue
        out = jiwer.process_words(
            " ".join(w["word"] for w in ref), " ".join(w["word"] for w in hyp)
        )
        for chunk in out.alignments[0]:
            if chunk.type == "equal":
                for i, j in zip(
                    range(chunk.ref_start_idx, chunk.ref_end_idx),
                    range(chunk.hyp_start_idx, chunk.hyp_end_idx),
                ):
                    for key in signed:
                        signed[key].append(hyp[j][key] - ref[i][key])
    out = {"matched": len(signed["start"])}
    for key, v in signed.items():
        v = np.asarray(v)
        out[key] = {
            "signed_median_ms": 1000 * float(np.median(v)),
            "abs_median_ms": 1000 * float(np.median(np.abs(v))),
            "abs_p90_ms": 1000 * float(np.percentile(np.abs(v), 90)),
        }
    return out


def segment_table(manifest, truth, name) -> dict:
    """Segmentation alone (no decoding): how the segments hold the true sentences."""
    import soundfile

    from s2t_jax.decoding.transcribe import split_at_pauses, split_windows

    root = os.path.dirname(manifest)
    rows = list(csv.DictReader(open(manifest), delimiter="\t", quoting=csv.QUOTE_NONE))
    count, started = collections.Counter(), time.perf_counter()
    audio = 0.0
    for row in rows:
        wave, rate = soundfile.read(os.path.join(root, row["audio"]), dtype="float32")
        audio += len(wave) / rate
        segmenter, opts = SEGMENTERS[name]
        if segmenter == "fixed":
            pieces = split_windows(wave, 20 * rate, 20 * rate, 400)
        else:
            pieces = split_at_pauses(wave, rate, 20 * rate, 20.0, segmenter, opts)
        segs = [{"start": a / rate, "end": (a + len(p)) / rate} for a, p in pieces]
        classes, held = classify(sentences_of(truth[row["id"]]), segs)
        count.update(classes)
        count["segments"] += len(segs)
        count["noise-only segments"] += sum(not h for h in held)
    count["audio_s_per_s"] = round(audio / (time.perf_counter() - started))
    return dict(count)


def oracle_table(model, processor, manifest, truth, kwargs, margins, batch_size) -> dict:
    """WER of the sentences cut at their true spans (see the module's docstring)."""
    import jiwer
    import soundfile

    from s2t_jax.decoding.transcribe import _decode

    root = os.path.dirname(manifest)
    items = []  # (waveform, rate, text, speech start, speech end, lowest start, highest end)
    for row in csv.DictReader(open(manifest), delimiter="\t", quoting=csv.QUOTE_NONE):
        wave, rate = soundfile.read(os.path.join(root, row["audio"]), dtype="float32")
        sents = sentences_of(truth[row["id"]])
        for i, s in enumerate(sents):
            lo = (sents[i - 1]["e"] + s["s"]) / 2 if i else 0.0
            hi = (s["e"] + sents[i + 1]["s"]) / 2 if i + 1 < len(sents) else len(wave) / rate
            items.append((wave, rate, s["text"], s["s"], s["e"], lo, hi))
    extractor = processor.feature_extractor
    out = {}
    for margin in margins:
        pieces = [
            w[int(max(lo, a - margin) * r) : int(min(hi, b + margin) * r)]
            for w, r, _, a, b, lo, hi in items
        ]
        order = np.argsort([len(p) for p in pieces])
        hyps = [""] * len(pieces)
        for first in range(0, len(order), batch_size):
            idx = order[first : first + batch_size]
            inputs = extractor(
                [pieces[j] for j in idx], padding=True, sampling_rate=16000, return_tensors="np"
            )
            ids = _decode(
                model,
                inputs["input_features"],
                inputs.get("attention_mask"),
                "attention",
                10,
                kwargs,
            )
            for j, text in zip(idx, processor.batch_decode(ids, skip_special_tokens=True)):
                hyps[j] = " ".join(text.split())
        wer = jiwer.wer([it[2] for it in items], hyps)
        out["mid-pause" if margin >= 99 else f"{margin:.2f} s"] = round(100 * wer, 2)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--set", default="test", choices=("test", "dev"))
    parser.add_argument("--tables", default="wer,segments,errors")
    parser.add_argument("--segmenters", default=",".join(SEGMENTERS))
    parser.add_argument("--decoders", default=",".join(DECODERS))
    parser.add_argument("--precut", default="", help="eval.py output dirs, decoder=dir,...")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument(
        "--word_time_shift",
        default="",
        help="start,end seconds added to word times: the negated signed medians that "
        "`--set dev --tables times` prints (never measured on test)",
    )
    args = parser.parse_args()
    tables = set(args.tables.split(","))
    names = [n for n in args.segmenters.split(",") if n]
    for n in names:
        if n not in SEGMENTERS:
            raise SystemExit(f"--segmenters: {n!r} is not one of {list(SEGMENTERS)}")
    stem = "longform" if args.set == "test" else "longform_dev"
    manifest = os.path.join(os.path.abspath(args.corpus), stem + ".tsv")
    truth = json.load(open(os.path.join(args.corpus, stem + "_words.json")))
    report = {}
    if "segments" in tables:
        for name in names:
            row = segment_table(manifest, truth, name)
            report.setdefault("segments", {})[name] = row
            print(f"segments | {name} | {row}", flush=True)
    decode_tables = tables & {"wer", "errors", "times", "throughput", "oracle"}
    if decode_tables:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        from s2t_jax.evaluation.checkpoint import load_checkpoint
        from s2t_jax.evaluation.long_form import evaluate_long_form
        from s2t_jax.frontend.processor import Speech2TextProcessor

        model = load_checkpoint(args.model).model
        processor = Speech2TextProcessor.from_pretrained(args.model)
        precut = {}
        for item in filter(None, args.precut.split(",")):
            decoder, folder = item.split("=")
            with open(os.path.join(folder, "hypotheses.tsv")) as f:
                rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                precut[decoder] = {r["id"]: r["hypothesis"] for r in rows}
        for decoder in args.decoders.split(","):
            if "oracle" in tables:
                kwargs = dict(num_beams=5, **DECODERS[decoder])
                margins = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 99.0)
                row = oracle_table(
                    model, processor, manifest, truth, kwargs, margins, args.batch_size
                )
                report.setdefault("oracle", {})[decoder] = row
                print(f"oracle | {decoder} | {json.dumps(row)}", flush=True)
            for name in names if tables & {"wer", "errors", "times", "throughput"} else []:
                segmenter, options = SEGMENTERS[name]
                out = os.path.join(args.out, f"{args.set}_{name}_{decoder}")
                kwargs = dict(num_beams=5, **DECODERS[decoder])
                if options:
                    kwargs["segmenter_options"] = options
                if args.word_time_shift:
                    shift = tuple(float(x) for x in args.word_time_shift.split(","))
                    kwargs["word_time_shift"] = shift
                passes = 1 + (args.repeats if "throughput" in tables else 0)
                walls = []
                for _ in range(passes):
                    started = time.perf_counter()
                    res = evaluate_long_form(
                        model,
                        processor,
                        manifest,
                        out,
                        segmenter=segmenter,
                        window_seconds=20.0,
                        batch_size=args.batch_size,
                        **kwargs,
                    )
                    walls.append(time.perf_counter() - started)
                audio = sum(
                    int(r["n_frames"]) * 0.01
                    for r in csv.DictReader(open(manifest), delimiter="\t", quoting=csv.QUOTE_NONE)
                )
                row = {
                    "wer": round(res["metrics"]["wer"], 2),
                    "segments": res["segments"],
                    "word_times": res["word_times"],
                    "first_pass_s": round(walls[0], 1),
                }
                if "throughput" in tables:
                    row["audio_s_per_s"] = [round(audio / w, 1) for w in walls[1:]]
                    row["compile_s_approx"] = round(walls[0] - min(walls[1:]), 1)
                if "errors" in tables:
                    row["errors"] = error_table(
                        os.path.join(out, "hypotheses.jsonl"), truth, precut.get(decoder)
                    )
                if "times" in tables:
                    row["times"] = time_errors(os.path.join(out, "hypotheses.jsonl"), truth)
                report.setdefault("decode", {})[f"{name} | {decoder}"] = row
                print(f"decode | {name} | {decoder} | {json.dumps(row)}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"report_{args.set}.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
