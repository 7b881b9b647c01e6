"""Transcribe (or translate) audio files; `python -m s2t_jax.transcribe` is its command line.

Files of any sample rate and channel count are decoded, down-mixed and resampled by
`s2t_jax.frontend.audio`. A file that cannot be read is reported (`on_error`) and skipped; the
run goes on.

Long audio is cut into segments the encoder can take. By default (`segmenter="pause"`) the cuts
fall in pauses (frontend/segment.py): segments of up to `max_seconds` (at most the encoder's
reach), so no word is cut in two where the speaker paused. `segmenter="webrtc"` or "silero"
takes the speech decisions from those VAD libraries instead of our energy detector, with the
same cutting rules (frontend/vad.py; each needs its pip package). `segmenter="fixed"` cuts
back-to-back windows of the encoder's reach (or `window_seconds`), as before: no frame is
decoded twice, but a word may be cut at a boundary. A file with no detected speech is decoded
whole, so nothing vanishes silently. All segments of all files go through the model as batches
(sorted by length, so each batch pads little).

Each file gives a list of segments {start, end, text} in seconds; with a model that has a CTC
head, each segment also gets its words with start and end times from a CTC forced alignment of
the decoded text (decoding/timestamps.py). `--tgt_lang fr` forces the language tag of
multilingual checkpoints as the first generated token (transformers' forced_bos_token_id).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from s2t_jax.decoding.buckets import DEFAULT_BUCKETS, pad_to_bucket
from s2t_jax.frontend.fbank import FRAME_SECONDS, HOP_SECONDS  # 25 ms frames every 10 ms

SEGMENTERS = ("pause", "webrtc", "silero", "fixed")


@dataclasses.dataclass
class Window:
    file_index: int
    position: int
    samples: np.ndarray  # [samples] at the extractor's rate
    start: int = 0  # first sample within the file


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
    """(start, piece) of consecutive windows of `waveform`; a trailing piece shorter than one
    frame is dropped (it holds no frame), unless it is the whole waveform."""
    pieces = []
    for start in range(0, max(1, len(waveform)), step):
        piece = waveform[start : start + length]
        if len(piece) < min_samples and pieces:
            break
        pieces.append((start, piece))
        if start + length >= len(waveform):
            break
    return pieces


def split_at_pauses(
    waveform: np.ndarray,
    rate: int,
    length: int,
    max_seconds=None,
    segmenter: str = "pause",
    options: dict | None = None,
) -> list:
    """(start, piece) of pause-cut segments no longer than `length` samples (or max_seconds).

    `segmenter` picks the speech detector ("pause": our energy one; "webrtc", "silero": the
    VAD libraries); `options` are SegmenterConfig fields, plus `aggressiveness` (webrtc) or
    `threshold` (silero).
    """
    from s2t_jax.frontend.segment import SegmenterConfig, segment

    options = dict(options or {})
    detector = {}
    for key in ("aggressiveness", "threshold"):
        if key in options:
            detector[key] = options.pop(key)
    fields = {f.name for f in dataclasses.fields(SegmenterConfig)}
    unknown = sorted(set(options) - fields - {"min_seconds", "max_seconds"})
    if unknown:
        raise ValueError(f"segmenter_options: unknown {unknown}; expected {sorted(fields)}")
    if "max_seconds" in options:
        raise ValueError("segmenter_options: give max_seconds as window_seconds")
    longest = length / rate if max_seconds is None else min(max_seconds, length / rate)
    options.setdefault("min_seconds", min(1.0, longest))
    config = SegmenterConfig(max_seconds=longest, **options)
    if segmenter == "pause":
        if detector:
            raise ValueError(f"segmenter_options: {sorted(detector)} are for webrtc / silero")
        spans = segment(waveform, rate, config)
    elif segmenter == "webrtc":
        from s2t_jax.frontend.vad import segment_webrtc

        spans = segment_webrtc(waveform, rate, config, **detector)
    elif segmenter == "silero":
        from s2t_jax.frontend.vad import segment_silero

        spans = segment_silero(waveform, rate, config, **detector)
    else:
        raise ValueError(f"segmenter={segmenter!r}: expected pause, webrtc or silero")
    if not spans:  # no speech found: decode it all rather than drop it
        return [(0, waveform[:length])]
    return [(a, waveform[a:b]) for a, b in spans]


def transcribe_segments(
    model,
    processor,
    paths,
    *,
    batch_size: int = 8,
    segmenter: str = "pause",
    window_seconds: float | None = None,
    segmenter_options: dict | None = None,
    timestamps: bool = True,
    word_time_shift: tuple[float, float] = (0.0, 0.0),
    on_error=None,
    decoder: str = "attention",
    ctc_beam: int = 10,
    **generate_kwargs,
) -> dict[int, list[dict]]:
    """{index in paths: [{"start", "end", "text"(, "words")}]} for every path that could be
    read; `on_error(path, err)` is called for the others. `window_seconds` caps the segment
    length (all segmenters); `segmenter_options` tunes the pause segmenters (split_at_pauses);
    `word_time_shift` (start, end seconds) corrects the CTC head's lag (timestamps.word_times);
    words come with times when `timestamps` and the model has a CTC
    head. `decoder`: "attention" (generate, with its ctc_weight / lm / lm_weight options),
    "ctc_greedy" or "rescoring" (decoding/ctc_decode.py)."""
    from s2t_jax.frontend.audio import load_audio

    if segmenter not in SEGMENTERS:
        raise ValueError(f"segmenter={segmenter!r}: expected one of {SEGMENTERS}")
    if segmenter == "fixed" and segmenter_options:
        raise ValueError("segmenter_options: the fixed segmenter takes none")
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
        if segmenter != "fixed":
            pieces = split_at_pauses(
                wave, rate, length, window_seconds, segmenter, segmenter_options
            )
        else:
            pieces = split_windows(wave, length, step, min_samples)
        pieces = [(s, p) for s, p in pieces if len(p) >= min_samples] or pieces[:1]
        counts[index] = len(pieces)
        windows += [Window(index, i, p, s) for i, (s, p) in enumerate(pieces)]

    with_words = timestamps and getattr(model, "ctc_head", None) is not None
    windows.sort(key=lambda w: len(w.samples))
    out: dict[tuple[int, int], dict] = {}
    for first in range(0, len(windows), batch_size):
        batch = windows[first : first + batch_size]
        inputs = extractor(
            [w.samples for w in batch], padding=True, sampling_rate=rate, return_tensors="np"
        )
        features, mask = inputs["input_features"], inputs.get("attention_mask")
        ids = _decode(model, features, mask, decoder, ctc_beam, generate_kwargs)
        decoded = processor.batch_decode(ids, skip_special_tokens=True)
        words = [None] * len(batch)
        if with_words:
            from s2t_jax.decoding.timestamps import align_words

            offsets = [w.start / rate for w in batch]
            # The alignment's encoder pass gets the frames padded to generate's buckets, so it
            # compiles for a few shapes, not anew for every batch's length (on the demo's 200
            # segments, 13 batches). generate gets them unpadded: it pads them itself and
            # keeps the padding out of the convs, which padding here would defeat (the demo's
            # WER moved by 0.1 when it did).
            padded, padded_mask = pad_to_bucket(features, mask, DEFAULT_BUCKETS)
            words = align_words(
                model, processor.tokenizer, padded, padded_mask, ids, offsets, shift=word_time_shift
            )
        for k, (window, text) in enumerate(zip(batch, decoded)):
            segment = {
                "start": round(window.start / rate, 3),
                "end": round((window.start + len(window.samples)) / rate, 3),
                "text": " ".join(text.split()),
            }
            if words[k] is not None:
                segment["words"] = words[k]
            out[window.file_index, window.position] = segment
    return {index: [out[index, i] for i in range(n)] for index, n in counts.items()}


def _decode(model, features, mask, decoder, ctc_beam, generate_kwargs) -> np.ndarray:
    from s2t_jax.decoding.ctc_decode import attention_rescoring, ctc_greedy_generate

    if decoder != "attention" and "lm" in generate_kwargs:
        raise ValueError(f"an LM fuses into the attention search, not decoder={decoder!r}")
    if decoder == "ctc_greedy":
        return ctc_greedy_generate(model, features, mask)
    if decoder == "rescoring":
        weight = generate_kwargs.get("ctc_weight") or 0.5
        return attention_rescoring(model, features, mask, beam_size=ctc_beam, ctc_weight=weight)
    if decoder != "attention":
        raise ValueError(f"decoder={decoder!r}: expected attention, ctc_greedy or rescoring")
    return np.asarray(model.generate(features, mask, **generate_kwargs))


def transcribe(model, processor, paths, **kwargs) -> dict[int, str]:
    """{index in paths: text}: `transcribe_segments` with the segments' texts joined."""
    kwargs.setdefault("timestamps", False)
    segments = transcribe_segments(model, processor, paths, **kwargs)
    return {
        index: " ".join(s["text"] for s in parts if s["text"]) for index, parts in segments.items()
    }
