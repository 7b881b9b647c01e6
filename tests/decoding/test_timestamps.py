"""Word times from a frame alignment, and the SRT / WebVTT / JSON caption formats."""

import json

import pytest

from s2t_jax.decoding.timestamps import to_json, to_srt, to_vtt, word_times


def test_words_join_their_pieces_and_take_their_frames():
    #          frame: 0   1  2  3   4  5  6   7  8  9
    token_of_frame = [-1, 0, 0, -1, 1, -1, 2, 2, -1, 3]
    pieces = ["\u2581he", "llo", "\u2581wor", "ld"]
    words = word_times(token_of_frame, pieces, frame_seconds=0.04, offset_seconds=10.0)
    assert words == [
        {"word": "hello", "start": 10.04, "end": 10.2},
        {"word": "world", "start": 10.24, "end": 10.4},
    ]


def test_a_lone_word_mark_is_not_a_word_and_unaligned_pieces_borrow_times():
    words = word_times([0, 1, -1, -1], ["\u2581a", "\u2581", "\u2581b"], frame_seconds=0.1)
    assert [w["word"] for w in words] == ["a", "b"]
    assert words[1]["start"] <= words[1]["end"]


def test_a_lone_word_mark_starts_the_word_its_next_pieces_spell():
    # sentencepiece writes "the red" as "▁the", "▁", "re", "d": "red" is a word of its own
    token_of_frame = [0, -1, 1, 2, 3, -1]
    words = word_times(token_of_frame, ["\u2581the", "\u2581", "re", "d"], frame_seconds=0.1)
    assert [(w["word"], w["start"], w["end"]) for w in words] == [
        ("the", 0.0, 0.1),
        ("red", 0.2, 0.5),
    ]


def test_a_calibrated_lag_shifts_the_times_within_the_segment():
    token_of_frame = [-1, 0, 0, -1, 1, -1]
    pieces = ["\u2581a", "\u2581b"]
    words = word_times(token_of_frame, pieces, 0.04, offset_seconds=5.0, shift_seconds=(-0.1, 0.02))
    # a: frames 1-2 -> 5.04-5.12, start moved to 5.0 at most (not before the segment)
    assert [(w["start"], w["end"]) for w in words] == [(5.0, 5.14), (5.06, 5.22)]
    late = word_times(token_of_frame, pieces, 0.04, shift_seconds=(0.0, -1.0))
    assert all(w["end"] == w["start"] for w in late)  # an end never before its start
    with pytest.raises(ValueError, match="shift_seconds"):
        word_times(token_of_frame, pieces, 0.04, shift_seconds=(0.1,))


def test_caption_formats():
    segments = [
        {"start": 0.0, "end": 2.5, "text": "first line"},
        {"start": 3661.2, "end": 3662.0, "text": ""},  # nothing said: no cue
        {"start": 3662.25, "end": 3663.0, "text": "second"},
    ]
    assert to_srt(segments) == (
        "1\n00:00:00,000 --> 00:00:02,500\nfirst line\n\n2\n01:01:02,250 --> 01:01:03,000\nsecond\n"
    )
    assert to_vtt(segments).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nfirst line\n")
    assert json.loads(to_json(segments, audio="a.wav"))["segments"][2]["text"] == "second"
