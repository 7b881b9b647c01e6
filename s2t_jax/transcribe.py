"""`python -m s2t_jax.transcribe --model DIR FILES...`: the command line of
s2t_jax.decoding.transcribe.

`--format text` (default) prints one line per file that could be read, `path<TAB>text`, in the
order given; `--format json` prints one JSON object per file (its segments with start, end,
text and, for models with a CTC head, word times); `--format srt` / `vtt` write captions to
`--output_dir` (one file per input, named after it). A file that cannot be read is reported on
stderr and skipped. Exit status: 0 when at least one file was transcribed, 1 when every file
failed, 2 for bad arguments.
"""

import argparse
import json
import math
import os
import sys

from s2t_jax.decoding.transcribe import SEGMENTERS, transcribe_segments

FORMATS = ("text", "json", "srt", "vtt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s2t_jax.transcribe",
        description="Transcribe (or translate) audio files with a Speech2Text model.",
    )
    parser.add_argument("files", nargs="+", help="audio files (wav, flac, ogg, ...)")
    parser.add_argument("--model", required=True, help="model directory (transformers or ours)")
    parser.add_argument("--num_beams", type=int, default=None, help="default: the model's")
    parser.add_argument("--max_length", type=int, default=None, help="default: the model's")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--tgt_lang", default=None, help="target language of multilingual models")
    parser.add_argument(
        "--window_seconds", type=float, default=None, help="cap segments below the encoder's reach"
    )
    parser.add_argument(
        "--segmenter",
        choices=SEGMENTERS,
        default="pause",
        help="cut long audio at pauses (default) or in back-to-back fixed windows",
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format")
    parser.add_argument(
        "--decoder",
        choices=("attention", "ctc_greedy", "rescoring"),
        default="attention",
        help="attention search (joint with --ctc_weight, fused with --lm), the CTC head's best "
        "path, or the CTC N-best rescored by the decoder",
    )
    parser.add_argument("--ctc_weight", type=float, default=None, help="needs a CTC head")
    parser.add_argument("--lm", default=None, help="language model dir or fairseq .pt")
    parser.add_argument("--lm_weight", type=float, default=None, help="shallow-fusion weight")
    parser.add_argument("--length_bonus", type=float, default=None, help="per generated token")
    parser.add_argument(
        "--maxlenratio",
        type=float,
        default=None,
        help="ESPnet's: at most max(1, int(R * T)) tokens per segment, T its encoder frames "
        "after subsampling (0: T); a hypothesis reaching it ends with eos (attention decoder)",
    )
    parser.add_argument(
        "--minlenratio",
        type=float,
        default=None,
        help="ESPnet's: at least int(R * T) tokens per segment (attention decoder)",
    )
    parser.add_argument("--output_dir", default=None, help="where srt / vtt files are written")
    parser.add_argument("--compilation_cache", default=None, help="persistent XLA cache dir")
    parser.add_argument(
        "--cpu_devices",
        type=int,
        default=None,
        help="on a CPU host, XLA devices to split each batch over (default: one per core)",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print("error: --batch_size must be >= 1", file=sys.stderr)
        return 2
    if args.cpu_devices is not None and args.cpu_devices < 1:
        print("error: --cpu_devices must be >= 1", file=sys.stderr)
        return 2
    for key in ("maxlenratio", "minlenratio"):
        value = getattr(args, key)
        if value is not None and not (math.isfinite(value) and value >= 0):
            print(f"error: --{key} must be a number >= 0, got {value}", file=sys.stderr)
            return 2
        if value is not None and args.decoder != "attention":
            print(
                f"error: --{key} limits the attention search, not --decoder {args.decoder}",
                file=sys.stderr,
            )
            return 2
    if args.format in ("srt", "vtt") and not args.output_dir:
        print(f"error: --format {args.format} writes files: give --output_dir", file=sys.stderr)
        return 2
    import jax

    from s2t_jax.parallel.host_devices import use_cpu_cores

    try:
        use_cpu_cores(args.cpu_devices)
    except RuntimeError as err:  # main() called in a process whose JAX has already started
        print(f"warning: {err}; using its {jax.device_count()} devices", file=sys.stderr)
    from s2t_jax.decoding.compilation_cache import enable_compilation_cache
    from s2t_jax.frontend.processor import Speech2TextProcessor
    from s2t_jax.modeling import Speech2TextForConditionalGeneration

    if args.compilation_cache:
        enable_compilation_cache(args.compilation_cache)
    try:
        model = Speech2TextForConditionalGeneration.from_pretrained(args.model)
        processor = Speech2TextProcessor.from_pretrained(args.model)
    except (OSError, ValueError) as err:  # missing dir, config, weights or tokenizer files
        print(f"error: --model {args.model}: {err}", file=sys.stderr)
        return 2
    kwargs = {}
    if args.tgt_lang is not None:
        codes = getattr(processor.tokenizer, "lang_code_to_id", None) or {}
        if args.tgt_lang not in codes:
            known = ", ".join(sorted(codes)) or "none (not a multilingual model)"
            print(f"error: --tgt_lang {args.tgt_lang!r}: languages: {known}", file=sys.stderr)
            return 2
        processor.tokenizer.tgt_lang = args.tgt_lang
        kwargs["forced_bos_token_id"] = codes[args.tgt_lang]
    for key in (
        "num_beams",
        "max_length",
        "ctc_weight",
        "lm_weight",
        "length_bonus",
        "maxlenratio",
        "minlenratio",
    ):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.lm is not None:
        from s2t_jax.checkpoints.lm import load_lm

        try:
            kwargs["lm"] = load_lm(args.lm)
        except (OSError, ValueError) as err:
            print(f"error: --lm {args.lm}: {err}", file=sys.stderr)
            return 2

    def report(path, err):
        print(f"{path}: skipped: {err}", file=sys.stderr)

    segments = transcribe_segments(
        model,
        processor,
        args.files,
        batch_size=args.batch_size,
        segmenter=args.segmenter,
        window_seconds=args.window_seconds,
        timestamps=args.format != "text",
        on_error=report,
        decoder=args.decoder,
        **kwargs,
    )
    if args.format != "text" and model.ctc_head is None:
        print("note: the model has no CTC head: segment times only, no word times", file=sys.stderr)
    write_outputs(args, segments, model.ctc_head is not None)
    return 0 if segments else 1


def write_outputs(args, segments: dict, word_times: bool) -> None:
    from s2t_jax.decoding.timestamps import to_json, to_srt, to_vtt

    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
    for index, path in enumerate(args.files):
        if index not in segments:
            continue
        parts = segments[index]
        if args.format == "text":
            text = " ".join(s["text"] for s in parts if s["text"])
            print(f"{path}\t{text}", flush=True)
        elif args.format == "json":
            info = {"audio": path, "word_times": "ctc" if word_times else "none (no CTC head)"}
            print(json.dumps(json.loads(to_json(parts, **info)), ensure_ascii=False), flush=True)
        else:
            writer = to_srt if args.format == "srt" else to_vtt
            stem = os.path.splitext(os.path.basename(path))[0]
            out = os.path.join(args.output_dir, f"{stem}.{args.format}")
            with open(out, "w", encoding="utf-8") as f:
                f.write(writer(parts))
            print(f"{path}\t{out}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
