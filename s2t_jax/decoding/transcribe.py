"""Transcribe (or translate) audio files; `python -m s2t_jax.transcribe` is its command line.

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

import dataclasses

import numpy as np

from s2t_jax.frontend.fbank import FRAME_SECONDS, HOP_SECONDS  # 25 ms frames every 10 ms


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
