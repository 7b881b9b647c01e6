"""Word times from a CTC alignment, and the caption formats long-form transcripts go out in.

`ctc.forced_align` gives, for each encoder frame, which token of the decoded text it belongs to.
A word's pieces (sentencepiece marks a word's first piece with "▁") then span frames, and one
encoder frame is `hop x 2 ** num_conv_layers` of audio (40 ms for the S2T models: 10 ms fbank
hops, subsampled 4x). Times are therefore CTC's peaks, a frame or two early at word starts, as
with every CTC aligner; docs/long_form.md gives the measured error.
"""

from __future__ import annotations

import json

import numpy as np

WORD_START = "\u2581"  # sentencepiece's word-boundary mark


def word_times(
    token_of_frame,
    pieces,
    frame_seconds: float,
    offset_seconds: float = 0.0,
    shift_seconds: tuple[float, float] = (0.0, 0.0),
):
    """token_of_frame int [frames] (index into `pieces`, -1 for blank); pieces: the aligned
    label strings -> [{"word", "start", "end"}] in seconds, words joined from their pieces.

    A word starts where its first frame starts and ends where its last frame ends.
    `shift_seconds` (start, end) moves both by a constant: a CTC head fires at a fixed lag
    from the sound on average, which a dev set with true times measures
    (bench/long_form.py --tables times); the lag belongs to the model, so it is an argument,
    not a constant here. An end is never moved before its word's start.
    A piece that no frame holds (impossible after a successful alignment) borrows its
    neighbour's time, so every word has a start <= end.
    """
    if len(shift_seconds) != 2:
        raise ValueError(f"shift_seconds={shift_seconds!r}: expected (start, end) seconds")
    token_of_frame = np.asarray(token_of_frame)
    first, last = {}, {}
    for t, k in enumerate(token_of_frame.tolist()):
        if k >= 0:
            first.setdefault(k, t)
            last[k] = t
    # A lone "▁" is a piece of its own when the word's first letters are not merged with the
    # mark ("red" -> "▁", "re", "d"): it starts the word, and the pieces after it join it.
    # (Skipping it used to glue those pieces to the word before: "the" + "red" -> "thered".)
    words, current = [], None
    for k, piece in enumerate(pieces):
        starts_word = piece.startswith(WORD_START) or current is None
        text = piece[1:] if piece.startswith(WORD_START) else piece
        if starts_word:
            current = {"word": text, "pieces": [k]}
            words.append(current)
        else:
            current["word"] += text
            current["pieces"].append(k)
    out, previous_end = [], 0
    for w in words:
        frames_start = [first[k] for k in w["pieces"] if k in first]
        frames_end = [last[k] for k in w["pieces"] if k in last]
        start = min(frames_start) if frames_start else previous_end
        end = max(frames_end) + 1 if frames_end else start
        previous_end = end
        if not w["word"]:
            continue
        begin = max(offset_seconds, offset_seconds + start * frame_seconds + shift_seconds[0])
        finish = max(begin, offset_seconds + end * frame_seconds + shift_seconds[1])
        out.append({"word": w["word"], "start": round(begin, 3), "end": round(finish, 3)})
    return out


def _clock(seconds: float, separator: str) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def to_srt(segments) -> str:
    """[{"start", "end", "text"}] -> SubRip text (1-based cues, hh:mm:ss,mmm)."""
    cues = [
        f"{i}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{s['text']}\n"
        for i, s in enumerate((s for s in segments if s["text"]), start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments) -> str:
    """[{"start", "end", "text"}] -> WebVTT text."""
    cues = [
        f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{s['text']}\n"
        for s in segments
        if s["text"]
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_json(segments, **info) -> str:
    """{"segments": [...], **info} with the segments' words when they have them."""
    return json.dumps({**info, "segments": list(segments)}, ensure_ascii=False, indent=2)


def align_words(
    model, tokenizer, features, mask, ids, offsets, blank: int | None = None, shift=(0.0, 0.0)
):
    """Word times of each decoded row by CTC forced alignment on the model's CTC head.

    features [batch, frames, F] and mask [batch, frames] as given to generate; ids [batch, len]
    the generated ids (decoder start first); offsets: each row's start in seconds within its
    file. -> per row a list of {"word", "start", "end"}, or None where the text cannot be
    aligned (more tokens than the frames allow). One encoder pass for the batch. `shift`:
    word_times' shift_seconds.
    """
    import jax
    import jax.numpy as jnp

    from s2t_jax.decoding import ctc

    config = model.config
    blank = config.bos_token_id if blank is None else blank
    enc, enc_mask = model.encode(features, mask)
    log_probs = ctc.ctc_log_probs(enc, {k: jnp.asarray(v) for k, v in model.ctc_head.items()})
    lengths = jnp.asarray(enc_mask).sum(axis=1).astype(jnp.int32)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    special |= {config.bos_token_id, config.eos_token_id, config.pad_token_id}
    rows, labels = [], []
    for row in np.asarray(ids):
        tokens = []
        for t in row[1:].tolist():
            if t == config.eos_token_id:
                break
            if t not in special and not tokenizer.convert_ids_to_tokens(t).startswith("<lang:"):
                tokens.append(t)
        rows.append(tokens)
    width = max(1, max(len(r) for r in rows))
    labels = np.zeros((len(rows), width), np.int32)
    for r, tokens in enumerate(rows):
        labels[r, : len(tokens)] = tokens
    token_of_frame, score = jax.jit(ctc.forced_align, static_argnames="blank")(
        log_probs, lengths, jnp.asarray(labels), jnp.asarray([len(r) for r in rows]), blank=blank
    )
    frame_seconds = 0.01 * 2**config.num_conv_layers
    out = []
    for r, tokens in enumerate(rows):
        if not tokens or float(score[r]) < -1e20:
            out.append([] if not tokens else None)
            continue
        pieces = tokenizer.convert_ids_to_tokens(tokens)
        times = word_times(np.asarray(token_of_frame[r]), pieces, frame_seconds, offsets[r], shift)
        out.append(times)
    return out
