"""Long inputs: what joint CTC/attention decoding, LM fusion and the CTC decoders do on 30-40 s.

An attention decoder trained on short utterances tends to fail on long ones in two ways: it
loops (repeats a phrase until max_length) or stops early (ends the hypothesis after the first
sentence or two). The CTC head is monotonic and frame-synchronous, so scoring with it should
hold the decoder to the audio. This bench measures that on the demo model (issue 16).

Inputs: consecutive utterances of the demo corpus' test split (its manifest's `audio` column,
read with s2t_jax's own loaders), joined with `--gap` seconds of pause (Gaussian noise at the
recordings' own noise floor) into recordings of 30 to 40.9 s. 40.9 s is the longest the demo
model can take: max_source_positions 1024 encoder positions after two stride-2 convs is 4096
feature frames (10 ms each). The reference is the
utterances' texts joined with spaces.

Decoders, each run through eval.py's own LocalGenerator (one device, one compiled search per
input shape): attention beam 5; joint CTC/attention at ctc_weight 0.3 and 0.5; CTC greedy; CTC
prefix beam search + attention rescoring (ctc_weight 0.5, as bench/demo_decoders.sh); attention
+ LM (lm_weight 0.3); joint 0.3 + LM. max_length is set from the references (1.25 x the longest
reference in tokens, plus the start token and eos), so a correct hypothesis always fits.

Per decoder: corpus WER; throughput (inputs/s and audio seconds/s over all inputs, after one
warm-up call on the batch shape, so compile time is apart, reported on its own); and failures:
  loops       the hypothesis has no eos within max_length, or some n-gram of 3 to 6 words
              occurs 3+ times in it and more often than in the reference
  early stops the hypothesis has fewer than 60% of the reference's words

    JAX_PLATFORMS=cpu python bench/long_inputs.py [--corpus DIR --model DIR --lm DIR]
        [--repeats 2] [--decoders attention,joint03,...] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from s2t_jax.data.manifest import read_manifest  # noqa: E402
from s2t_jax.decoding.settings import resolve_settings  # noqa: E402
from s2t_jax.evaluation.decoders import DecoderChoice, LocalGenerator  # noqa: E402
from s2t_jax.evaluation.metrics import utterance_errors  # noqa: E402
from s2t_jax.frontend.audio_entry import load_features_or_waveform  # noqa: E402

RATE = 16000
FRAME_SHIFT_S = 0.01  # Kaldi fbank: 10 ms per feature frame

DECODERS = {
    "attention": ("attention beam 5", dict()),
    "joint03": ("joint, ctc_weight 0.3", dict(ctc_weight=0.3)),
    "joint05": ("joint, ctc_weight 0.5", dict(ctc_weight=0.5)),
    "ctc_greedy": ("CTC greedy", dict(decoder="ctc_greedy")),
    "rescoring": (
        "CTC prefix beam + attention rescoring",
        dict(decoder="rescoring", ctc_weight=0.5),
    ),
    "attention_lm": ("attention + LM 0.3", dict(lm="LM", lm_weight=0.3)),
    "joint03_lm": ("joint 0.3 + LM 0.3", dict(ctc_weight=0.3, lm="LM", lm_weight=0.3)),
}


def max_input_frames(config) -> int:
    """Feature frames the encoder can position: max_source_positions before the stride-2
    convs (each halves the length, rounding up)."""
    return config.max_source_positions * 2**config.num_conv_layers


def build_inputs(corpus: Path, gap_s: float, targets_s, max_s: float):
    """Consecutive test utterances joined with `gap_s` s of pause -> [(waveform, reference,
    utterance ids)]. Input i takes utterances until it reaches targets_s[i % len] seconds, or
    until the next one would take it past `max_s` (then that one starts the next input). A
    tail shorter than the smallest target is dropped."""
    rng = np.random.default_rng(0)
    gap_len = int(round(gap_s * RATE))
    out, current, texts, names = [], [], [], []

    def close():
        out.append((np.concatenate(current), " ".join(texts), list(names)))
        current.clear(), texts.clear(), names.clear()

    for utt in read_manifest(corpus / "test.tsv"):
        kind, wave = load_features_or_waveform(utt.audio, corpus, RATE)
        if kind != "waveform":
            raise ValueError(f"{utt.audio}: expected audio, the manifest holds features")
        if current and (sum(map(len, current)) + gap_len + len(wave)) / RATE > max_s:
            close()
        if current:
            # The pause carries the recordings' own noise floor (the rms of the previous
            # utterance's last 50 ms): digital silence would be a log(0) floor in the fbank
            # that no training utterance has, and would skew the utterance's CMVN.
            floor = float(np.sqrt(np.mean(current[-1][-800:] ** 2)))
            current.append(rng.normal(0.0, floor, gap_len).astype(np.float32))
        current.append(wave)
        texts.append(utt.tgt_text)
        names.append(utt.id)
        if sum(map(len, current)) / RATE >= targets_s[len(out) % len(targets_s)]:
            close()
    return out


def loops(hyp: str, ref: str, ended: bool) -> bool:
    """No eos within max_length, or an n-gram (3-6 words) 3+ times and more than in ref."""
    if not ended:
        return True
    h, r = hyp.split(), ref.split()
    for n in range(3, 7):
        counts = collections.Counter(tuple(h[i : i + n]) for i in range(len(h) - n + 1))
        ref_counts = collections.Counter(tuple(r[i : i + n]) for i in range(len(r) - n + 1))
        if any(c >= 3 and c > ref_counts[g] for g, c in counts.items()):
            return True
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="/work/demo_run/corpus")
    parser.add_argument("--model", default="/work/demo_run/model")
    parser.add_argument("--lm", default="/work/demo_run/lm/lm")
    parser.add_argument("--gap", type=float, default=0.3, help="silence between utterances, s")
    parser.add_argument("--targets", default="30,32.5,35,37.5", help="input lengths to reach, s")
    parser.add_argument("--batch_size", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per decoder")
    parser.add_argument("--decoders", default=",".join(DECODERS))
    parser.add_argument("--json", default=None, help="also write results and hypotheses here")
    args = parser.parse_args()

    import jax

    from s2t_jax import Speech2TextForConditionalGeneration
    from s2t_jax.frontend.processor import Speech2TextProcessor

    model = Speech2TextForConditionalGeneration.from_pretrained(args.model)
    processor = Speech2TextProcessor.from_pretrained(args.model)
    config = model.config
    limit_frames = max_input_frames(config)
    limit_s = (limit_frames - 1) * FRAME_SHIFT_S + 0.025  # 25 ms window, 10 ms shift
    targets = [float(t) for t in args.targets.split(",")]
    print(
        f"max_source_positions {config.max_source_positions} x 2^{config.num_conv_layers} convs "
        f"= {limit_frames} frames = {limit_s:.2f} s: inputs up to that, not 60 s",
        flush=True,
    )
    inputs = build_inputs(Path(args.corpus), args.gap, targets, limit_s - 0.05)
    seconds = np.array([len(w) / RATE for w, _, _ in inputs])
    refs = [r for _, r, _ in inputs]
    tokens = [len(processor.tokenizer(r)["input_ids"]) for r in refs]  # labels + eos
    max_length = int(math.ceil(1.25 * max(tokens))) + 2
    print(
        f"{len(inputs)} inputs, {seconds.min():.1f}-{seconds.max():.1f} s "
        f"(mean {seconds.mean():.1f}, total {seconds.sum():.0f} s); {sum(len(n) for *_, n in inputs)} "
        f"utterances; reference tokens {min(tokens)}-{max(tokens)}; max_length {max_length} "
        f"(the model's max_target_positions is {config.max_target_positions})",
        flush=True,
    )
    feats = []
    for wave, _, _ in inputs:
        f = processor(wave, sampling_rate=RATE, return_tensors="np")["input_features"][0]
        feats.append(f)  # [frames, 80]
    frames = np.array([f.shape[0] for f in feats])
    if frames.max() > limit_frames:
        raise SystemExit(f"an input has {frames.max()} frames > {limit_frames}")
    # One input shape: every batch padded to the longest input (rounded up to 256 frames) and
    # to batch_size rows (the last batch repeats its first input; those rows are dropped).
    bs = args.batch_size
    pad_to = min(limit_frames, -(-int(frames.max()) // 256) * 256)
    batches = []
    for start in range(0, len(feats), bs):
        idx = list(range(start, min(start + bs, len(feats))))
        rows = idx + [idx[0]] * (bs - len(idx))
        x = np.zeros((bs, pad_to, feats[0].shape[1]), np.float32)  # [B, T, F]
        m = np.zeros((bs, pad_to), np.int32)  # [B, T]
        for j, i in enumerate(rows):
            x[j, : frames[i]], m[j, : frames[i]] = feats[i], 1
        batches.append((idx, x, m))

    settings = resolve_settings(model, num_beams=5, max_length=max_length)
    results = {}
    for name in args.decoders.split(","):
        label, kw = DECODERS[name]
        kw = {k: (args.lm if v == "LM" else v) for k, v in kw.items()}
        gen = LocalGenerator(model, settings, DecoderChoice(**kw))
        start = time.perf_counter()
        jax.block_until_ready(gen(batches[0][1], batches[0][2]))  # warm-up: compiles
        warm = time.perf_counter() - start
        times, hyps, ended = [], [None] * len(inputs), [True] * len(inputs)
        for _ in range(args.repeats):
            start = time.perf_counter()
            for idx, x, m in batches:
                ids = np.asarray(gen(x, m))  # [B, L]
                texts = processor.batch_decode(ids, skip_special_tokens=True)
                for j, i in enumerate(idx):
                    hyps[i] = texts[j]
                    ended[i] = bool((ids[j, 1:] == config.eos_token_id).any())
            times.append(time.perf_counter() - start)
        errors = [utterance_errors(r, h) for r, h in zip(refs, hyps)]
        wer = 100.0 * sum(e for e, _ in errors) / sum(n for _, n in errors)
        n_loops = sum(loops(h, r, e) for h, r, e in zip(hyps, refs, ended))
        early = sum(len(h.split()) < 0.6 * len(r.split()) for h, r in zip(hyps, refs))
        results[name] = dict(
            label=label,
            wer=wer,
            seconds=times,
            utt_per_s=[len(inputs) / t for t in times],
            audio_s_per_s=[seconds.sum() / t for t in times],
            warmup_s=warm,
            compile_s=gen.compile_seconds,
            loops=n_loops,
            early_stops=early,
            hypotheses=hyps,
        )
        r = results[name]
        print(
            f"{name:12s} WER {wer:6.2f}  utt/s {min(r['utt_per_s']):.3f}-{max(r['utt_per_s']):.3f}"
            f"  audio s/s {min(r['audio_s_per_s']):.1f}-{max(r['audio_s_per_s']):.1f}"
            f"  warm-up {warm:.1f} s (compile {gen.compile_seconds:.1f} s)"
            f"  loops {n_loops}  early stops {early}  / {len(inputs)}",
            flush=True,
        )

    print()
    print("| decoder | WER % | inputs/s | audio s/s | compile s | loops | early stops |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results.values():
        u, a = r["utt_per_s"], r["audio_s_per_s"]
        print(
            f"| {r['label']} | {r['wer']:.2f} | {min(u):.3f}-{max(u):.3f} | "
            f"{min(a):.1f}-{max(a):.1f} | {r['compile_s']:.1f} | {r['loops']} / {len(inputs)} | "
            f"{r['early_stops']} / {len(inputs)} |"
        )
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            meta = dict(
                inputs=len(inputs),
                seconds=seconds.tolist(),
                references=refs,
                reference_tokens=tokens,
                max_length=max_length,
                utterances=[n for *_, n in inputs],
            )
            json.dump(dict(meta=meta, results=results), f, indent=1)


if __name__ == "__main__":
    main()
