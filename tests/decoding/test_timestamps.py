"""Word times from a frame alignment, and the SRT / WebVTT / JSON caption formats."""

import json

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
