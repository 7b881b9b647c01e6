"""Cut long recordings at pauses into segments the encoder can take.

A fixed window cuts words in two at every boundary. Here each 10 ms frame is called speech or
pause by its energy against the local noise floor, and the recording is cut in the
middle of every pause of at least `cut_pause_seconds`, as a VAD front end cuts it: a model
trained on sentences then decodes sentence-sized segments. Pieces shorter than `min_seconds`
join the next one; a piece longer than `max_seconds` (below the encoder's reach) is cut at its
last shorter pause before the limit, or, with none, at its quietest frame in the last
`search_seconds` before the limit. Segments that hold no speech at all are dropped, and each
segment is trimmed to its speech plus `margin_seconds` of pause on either side: the rest of
the pause is noise the model never saw around a sentence in training (on the demo's long-form
set, segments cut in mid-pause but not trimmed double the WER of the same sentences decoded
as recorded).

`cut_spans` holds the cutting rules alone, so that the VAD libraries' speech/non-speech
decisions (frontend/vad.py) are cut by the same rules as ours.

The energy detector needs no model and no extra dependency; docs/long_form.md compares it with
the VAD libraries (webrtcvad, silero) where they are installed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

HOP_SECONDS = 0.010
WINDOW_SECONDS = 0.025


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
    min_seconds: float = 1.0
    max_seconds: float = 20.0
    # Every pause this long is a cut. On the demo's dev long-form set, this detector's pauses
    # inside a sentence are at most 0.26 s (stop closures: "stopped twice") and those between
    # sentences at least 0.51 s; 0.4 s lies between them (0.3 s cut 2 of the 200 test
    # sentences in two at a closure).
    cut_pause_seconds: float = 0.4
    min_pause_seconds: float = 0.15  # shorter quiet stretches are within speech
    min_speech_seconds: float = 0.08  # shorter loud bursts are clicks, not speech
    search_seconds: float = 3.0  # where to look for the quietest frame of a forced cut
    margin_db: float = 6.0  # speech is at least this far above the noise floor
    floor_seconds: float = 4.0  # the window the noise floor is measured over
    # Pause kept around a segment's speech. The demo model's training utterances have
    # 0.05-0.4 s of noise before and after the voice (this detector on the dev split: median
    # 0.18 s lead, 0.20 s trail), so a segment with 0.2 s each side looks like what it saw.
    margin_seconds: float = 0.2
    # 2: the floor is the louder of the quietest levels before and after the frame (see
    # speech_frames); 1: the quietest level of the whole window around it, the detector before
    # 2026-12-04, kept so that bench/long_form.py can measure what the change bought.
    floor_sides: int = 2

    def __post_init__(self):
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError(
                f"segmenter: need 0 < min_seconds ({self.min_seconds}) <= max_seconds "
                f"({self.max_seconds})"
            )
        if self.min_pause_seconds <= 0 or self.search_seconds <= 0:
            raise ValueError("segmenter: min_pause_seconds and search_seconds must be > 0")
        if self.floor_sides not in (1, 2):
            raise ValueError(f"segmenter: floor_sides ({self.floor_sides}) must be 1 or 2")
        if self.margin_seconds < 0:
            raise ValueError(f"segmenter: margin_seconds ({self.margin_seconds}) must be >= 0")
        if self.cut_pause_seconds <= 0 or self.floor_seconds <= 0:
            raise ValueError("segmenter: cut_pause_seconds and floor_seconds must be > 0")


def frame_energy_db(waveform: np.ndarray, rate: int) -> np.ndarray:
    """Log energy (dB) of each 25 ms frame every 10 ms -> float64 [frames]."""
    hop, win = round(HOP_SECONDS * rate), round(WINDOW_SECONDS * rate)
    x = np.asarray(waveform, np.float64)
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    frames = 1 + (len(x) - win) // hop
    power = np.cumsum(np.concatenate([[0.0], x * x]))  # running sum of squares
    starts = np.arange(frames) * hop
    mean = (power[starts + win] - power[starts]) / win  # [frames]
    return 10.0 * np.log10(mean + 1e-12)


def speech_frames(energy_db: np.ndarray, config: SegmenterConfig) -> np.ndarray:
    """bool [frames]: speech above the local noise floor, short pauses filled, short bursts
    dropped.

    The floor and the loudest level are taken over a sliding window of `floor_seconds`, not the
    whole recording: background noise changes along a recording (speakers, rooms, gain), and a
    pause in loud noise must still count as a pause. On the demo's long-form set a global floor
    left 140 of 200 sentences alone in a segment, the local one 182.

    The floor is the quietest level of the half-window before the frame or of the half-window
    after it, whichever is louder (of the sides that hold some pause). Where the noise level
    steps up (a louder speaker's recording after a quiet one), a floor over the whole window
    would stay at the quiet side's level and call the louder pause speech, joining the
    sentences either side; the side that holds the louder noise sets the floor instead. On
    the demo's dev long-form set this took the sentences alone in a segment from 186 to 200
    of 200.
    """
    from scipy.ndimage import maximum_filter1d, minimum_filter1d

    window = max(3, round(config.floor_seconds / HOP_SECONDS) | 1)
    floor = minimum_filter1d(energy_db, window, mode="nearest")
    if config.floor_sides == 2:
        half = window // 2
        for origin in (half // 2, -(half // 2)):  # the half-window before, then after
            low = minimum_filter1d(energy_db, half + 1, mode="nearest", origin=origin)
            high = maximum_filter1d(energy_db, half + 1, mode="nearest", origin=origin)
            # Only a side that holds both speech and pause (2 x margin_db between its quietest
            # and loudest frames) can say where the noise is; a side of speech alone would
            # put the floor at the dips of the speech.
            floor = np.where(high - low >= 2 * config.margin_db, np.maximum(floor, low), floor)
    loud = maximum_filter1d(energy_db, window, mode="nearest")
    threshold = floor + np.maximum(config.margin_db, 0.3 * (loud - floor))
    speech = energy_db > threshold
    speech = _fill_runs(speech, False, round(config.min_pause_seconds / HOP_SECONDS))
    return _fill_runs(speech, True, round(config.min_speech_seconds / HOP_SECONDS))


def _fill_runs(flags: np.ndarray, value: bool, shorter_than: int) -> np.ndarray:
    """Flips inner runs of `value` shorter than `shorter_than` frames to `not value`."""
    out = flags.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[not value], flags == value, [not value]])))
    for start, end in zip(edges[::2], edges[1::2]):
        inner = start > 0 and end < len(flags)
        if inner and end - start < shorter_than:
            out[start:end] = not value
    return out


def segment(waveform: np.ndarray, rate: int, config: SegmenterConfig | None = None):
    """-> [(start_sample, end_sample)] in order, covering every speech frame once."""
    config = config or SegmenterConfig()
    energy = frame_energy_db(waveform, rate)
    return cut_spans(speech_frames(energy, config), energy, len(waveform), rate, config)


def cut_spans(speech, energy_db, num_samples: int, rate: int, config: SegmenterConfig):
    """The cutting rules on any detector's decisions: speech bool [frames] and energy_db
    [frames] (frame_energy_db's 10 ms frames) -> [(start_sample, end_sample)] in order.

    Cuts fall in the middle of every pause of `cut_pause_seconds` or more; pieces shorter than
    `min_seconds` join the next; a piece over `max_seconds` is cut at its last pause, or at its
    quietest frame; pieces without speech are dropped; each kept piece is trimmed to its
    speech plus `margin_seconds`.
    """
    speech = np.asarray(speech, bool)
    if speech.shape != np.shape(energy_db):
        raise ValueError(
            f"speech ({speech.shape}) and energy_db ({np.shape(energy_db)}) differ in frames"
        )
    energy = np.asarray(energy_db)
    n = len(speech)
    frames = lambda seconds: round(seconds / HOP_SECONDS)  # noqa: E731
    min_f, max_f, search = (
        frames(config.min_seconds),
        frames(config.max_seconds),
        frames(config.search_seconds),
    )
    edges = np.flatnonzero(np.diff(np.concatenate([[1], speech.astype(np.int8), [1]])))
    pauses = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if a > 0 and b < n]  # inner
    pause_mid = np.array([(a + b) // 2 for a, b in pauses], np.int64)
    long_pause = [(a + b) // 2 for a, b in pauses if b - a >= frames(config.cut_pause_seconds)]
    bounds = [0]
    for cut in long_pause + [n]:  # a piece shorter than min_seconds joins the next one
        if cut - bounds[-1] >= min_f or cut == n:
            bounds.append(cut)
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < min_f:
        del bounds[-2]  # so does a short last piece, with the one before it
    cuts = [0]
    for b in bounds[1:]:
        start = cuts[-1]
        while b - start > max_f:  # too long for the encoder: cut it further
            window = pause_mid[(pause_mid >= start + min_f) & (pause_mid <= start + max_f)]
            if len(window):
                cut = int(window[-1])
            else:  # no pause at all: the quietest frame just before the limit
                lo = min(max(start + min_f, start + max_f - search), start + max_f - 1)
                lo = max(lo, start + 1)
                cut = lo + int(np.argmin(energy[lo : start + max_f]))
            cuts.append(cut)
            start = cut
        cuts.append(b)
    hop, margin = round(HOP_SECONDS * rate), frames(config.margin_seconds)
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        voiced = np.flatnonzero(speech[a:b])
        if not len(voiced):
            continue
        first, last = max(a, a + voiced[0] - margin), min(b, a + voiced[-1] + 1 + margin)
        end = num_samples if last >= n else min(last * hop, num_samples)
        out.append((first * hop, end))
    return out
