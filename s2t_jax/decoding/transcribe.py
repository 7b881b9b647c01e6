"""Transcribe (or translate) audio files: `python -m s2t_jax.transcribe --model DIR FILES...`.

Prints one line per file that could be read, `path<TAB>text`, in the order given. Files of any
sample rate and channel count are decoded, down-mixed and resampled by `s2t_jax.frontend.audio`. A file
that cannot be read is reported on stderr and skipped; the run goes on. Exit status: 0 when at
least one file was transcribed, 1 when every file failed, 2 for bad arguments.

Audio longer than the encoder's reach (max_source_positions after subsampling) is cut into
consecutive windows of that many frames. The windows share no frames, so no word is decoded
twice, but one may be cut at a boundary. All windows of all files go through the model as
batches (sorted by length, so each batch pads little), and the texts of one file's windows are
joined with spaces. `--tgt_lang fr` forces the language tag of multilingual checkpoints as the
first generated token (transformers' forced_bos_token_id).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

FRAME_SECONDS = 0.025  # the feature extractor's 25 ms frames every 10 ms
HOP_SECONDS = 0.010


@dataclasses.dataclass
class Window:
    file_index: int
    position: int
    samples: np.ndarray  # [samples] at the extractor's rate


def window_samples(config, sampling_rate: int, window_seconds: float | None = None) -> tuple:
    """(window length, window step) in samples.

    A window holds as many frames as the encoder reaches: max_source_positions positions
    after `num_conv_layers` stride-2 convs, i.e. max_source_positions * 2**layers frames. The
    step is that many hops, so consecutive windows cover consecutive frames.
    """
    hop = int(round(HOP_SECONDS * sampling_rate))
    frame = int(round(FRAME_SECONDS * sampling_rate))
    frames = config.max_source_positions * 2**config.num_conv_layers
    if window_seconds is not None:
        frames = min(frames, max(1, int(window_seconds / HOP_SECONDS)))
    return (frames - 1) * hop + frame, frames * hop


def split_windows(waveform: np.ndarray, length: int, step: int, min_samples: int) -> list:
    """Consecutive windows of `waveform`; a trailing piece shorter than one frame is dropped
    (it holds no frame), unless it is the whole waveform."""
    pieces = []
    for start in range(0, max(1, len(waveform)), step):
        piece = waveform[start : start + length]
        if len(piece) < min_samples and pieces:
            break
        pieces.append(piece)
        if start + length >= len(waveform):
            break
    return pieces


def transcribe(
    model,
    processor,
    paths,
    *,
    batch_size: int = 8,
    window_seconds: float | None = None,
    on_error=None,
    **generate_kwargs,
) -> dict[int, str]:
    """{index in paths: text} for every path that could be read; `on_error(path, err)` is
    called for the others."""
    from s2t_jax.frontend.audio import load_audio

    extractor = processor.feature_extractor
    rate = extractor.sampling_rate
    length, step = window_samples(model.config, rate, window_seconds)
    min_samples = int(round(FRAME_SECONDS * rate))
    windows, counts = [], {}
    for index, path in enumerate(paths):
        try:
            wave = load_audio(path, rate)
        except (ValueError, OSError) as err:  # AudioError is a ValueError
            if on_error is not None:
                on_error(path, err)
            continue
        if len(wave) < min_samples:
            if on_error is not None:
                on_error(path, ValueError("shorter than one 25 ms frame"))
            continue
        pieces = split_windows(wave, length, step, min_samples)
        counts[index] = len(pieces)
        windows += [Window(index, i, piece) for i, piece in enumerate(pieces)]

    windows.sort(key=lambda w: len(w.samples))
    texts: dict[tuple[int, int], str] = {}
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        inputs = extractor(
            [w.samples for w in batch], padding=True, sampling_rate=rate, return_tensors="np"
        )
        ids = model.generate(
            inputs["input_features"], inputs.get("attention_mask"), **generate_kwargs
        )
        decoded = processor.batch_decode(ids, skip_special_tokens=True)
        for window, text in zip(batch, decoded):
            texts[window.file_index, window.position] = text.strip()
    return {
        index: " ".join(t for i in range(n) if (t := texts[index, i]))
        for index, n in counts.items()
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m s2t_jax.transcribe", description=__doc__.split("\n\n")[0]
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
