"""`python -m s2t_jax.transcribe --model DIR FILES...`: the command line of
s2t_jax.decoding.transcribe.

Prints one line per file that could be read, `path<TAB>text`, in the order given; a file that
cannot be read is reported on stderr and skipped. Exit status: 0 when at least one file was
transcribed, 1 when every file failed, 2 for bad arguments.
"""

import argparse
import sys

from s2t_jax.decoding.transcribe import transcribe


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
        "--window_seconds", type=float, default=None, help="cap windows below the encoder's reach"
    )
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
    for key in ("num_beams", "max_length"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)

    def report(path, err):
        print(f"{path}: skipped: {err}", file=sys.stderr)

    texts = transcribe(
        model,
        processor,
        args.files,
        batch_size=args.batch_size,
        window_seconds=args.window_seconds,
        on_error=report,
        **kwargs,
    )
    for index, path in enumerate(args.files):
        if index in texts:
            print(f"{path}\t{texts[index]}", flush=True)
    return 0 if texts else 1


if __name__ == "__main__":
    sys.exit(main())
