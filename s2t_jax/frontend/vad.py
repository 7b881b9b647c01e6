"""Segmenters on the VAD libraries' speech decisions: WebRTC's GMM VAD and Silero's network.

The issue asks whether a real voice-activity detector beats our energy detector
(frontend/segment.py) on long recordings. Only the speech/non-speech decision differs: each
library's decisions are brought onto our 10 ms frames, short pauses and bursts are smoothed
as ours are, and `segment.cut_spans` cuts them by the same rules (cuts in the middle of pauses
of `cut_pause_seconds`, `min_seconds` / `max_seconds`, the quietest frame when no pause is
found, `margin_seconds` of pause kept around the speech). So a WER difference is the
detector's, not the cutting's.

Neither library is a dependency of s2t-jax: each is imported when first used, with an error
that names the pip package. Silero runs its ONNX model straight on onnxruntime (the file that
the `silero-vad` package ships); importing the package itself would import torch.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import numpy as np

from s2t_jax.frontend.segment import (
    HOP_SECONDS,
    WINDOW_SECONDS,
    SegmenterConfig,
    _fill_runs,
    cut_spans,
    frame_energy_db,
)

WEBRTC_RATES = (8000, 16000, 32000, 48000)
# rate: (frame samples, context samples); the sequence model silero-vad ships is 16 kHz only
SILERO_RATES = {16000: (512, 64)}


def _need(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"this segmenter needs the {package!r} package: pip install {package}"
        ) from err


def _to_hops(decisions: np.ndarray, step: int, num_frames: int, hop: int, win: int):
    """Decisions on consecutive `step`-sample chunks -> one per 25 ms frame every 10 ms hop
    (frame_energy_db's frames): each frame takes the decision of the chunk holding its
    centre."""
    if len(decisions) == 0:
        return np.zeros(num_frames, bool)
    centres = np.arange(num_frames) * hop + win // 2
    return decisions[np.minimum(centres // step, len(decisions) - 1)]


def _smooth(speech: np.ndarray, config: SegmenterConfig) -> np.ndarray:
    """The same smoothing as our detector: short pauses filled, short bursts dropped."""
    speech = _fill_runs(speech, False, round(config.min_pause_seconds / HOP_SECONDS))
    return _fill_runs(speech, True, round(config.min_speech_seconds / HOP_SECONDS))


def webrtc_speech(waveform: np.ndarray, rate: int, aggressiveness: int = 2) -> np.ndarray:
    """WebRTC's decision on each 10 ms chunk -> bool [chunks]. `aggressiveness` 0-3: how
    readily it calls a chunk non-speech (3: most)."""
    if aggressiveness not in (0, 1, 2, 3):
        raise ValueError(f"aggressiveness={aggressiveness!r}: expected 0, 1, 2 or 3")
    if rate not in WEBRTC_RATES:
        raise ValueError(f"rate={rate}: webrtcvad takes {WEBRTC_RATES} Hz only")
    webrtcvad = _need("webrtcvad", "webrtcvad-wheels")
    vad = webrtcvad.Vad(aggressiveness)
    step = rate // 100
    pcm = np.clip(np.round(np.asarray(waveform, np.float64) * 32768), -32768, 32767)
    pcm = pcm.astype("<i2")
    chunks = len(pcm) // step
    out = np.zeros(max(chunks, 1), bool)
    for i in range(chunks):
        out[i] = vad.is_speech(pcm[i * step : (i + 1) * step].tobytes(), rate)
    return out


@functools.lru_cache(maxsize=2)
def _silero_session(path: str):
    ort = _need("onnxruntime", "onnxruntime")
    options = ort.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


def _silero_model_path() -> str:
    """The ONNX file the silero-vad package ships, found without importing the package."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the 'silero' segmenter needs the 'silero-vad' package: pip install silero-vad"
        )
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "data", "silero_vad_16k_sequence.onnx")
        if os.path.exists(path):
            return path
    raise ImportError(
        "silero-vad is installed but ships no data/silero_vad_16k_sequence.onnx "
        "(silero-vad >= 6.2 has it): pip install -U silero-vad"
    )


def silero_probabilities(waveform: np.ndarray, rate: int, block_frames: int = 512):
    """Silero's speech probability of each 32 ms frame (512 samples at 16 kHz) -> float32
    [frames]. The model is a recurrent network: each frame sees the previous frame's last 64
    samples, and the LSTM state runs on across blocks of `block_frames` frames (one ONNX call
    per block, so the Python loop is short)."""
    if rate not in SILERO_RATES:
        raise ValueError(f"rate={rate}: silero-vad's sequence model takes 16000 Hz only")
    session = _silero_session(_silero_model_path())
    size, context = SILERO_RATES[rate]
    x = np.asarray(waveform, np.float32)
    frames = -(-len(x) // size)
    if frames == 0:
        return np.zeros(0, np.float32)
    padded = np.zeros(frames * size, np.float32)
    padded[: len(x)] = x
    chunks = padded.reshape(frames, size)
    before = np.concatenate([np.zeros((1, context), np.float32), chunks[:-1, -context:]])
    inputs = np.concatenate([before, chunks], axis=1)  # [frames, context + size]
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    out = []
    for first in range(0, frames, block_frames):
        probs, h, c = session.run(
            ["speech_probs", "hn", "cn"],
            {"input": inputs[first : first + block_frames], "h": h, "c": c},
        )
        out.append(np.asarray(probs).reshape(-1))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def silero_speech(waveform: np.ndarray, rate: int, threshold: float = 0.5) -> np.ndarray:
    """bool per 32 ms frame: speech from a probability of `threshold` up, and on until it
    falls below `threshold - 0.15` (the hysteresis Silero's own get_speech_timestamps uses,
    so a word's soft end is not cut off)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold={threshold}: expected a probability in (0, 1)")
    probs = silero_probabilities(waveform, rate)
    out, on = np.zeros(len(probs), bool), False
    for i, p in enumerate(probs.tolist()):
        on = p >= threshold or (on and p >= threshold - 0.15)
        out[i] = on
    return out


def segment_webrtc(waveform, rate: int, config: SegmenterConfig | None = None, aggressiveness=2):
    """segment.segment's spans, with WebRTC's speech decisions instead of our energy's."""
    config = config or SegmenterConfig()
    energy = frame_energy_db(waveform, rate)
    chunks = webrtc_speech(waveform, rate, aggressiveness)
    hop, win = round(HOP_SECONDS * rate), round(WINDOW_SECONDS * rate)
    speech = _smooth(_to_hops(chunks, rate // 100, len(energy), hop, win), config)
    return cut_spans(speech, energy, len(waveform), rate, config)


def segment_silero(waveform, rate: int, config: SegmenterConfig | None = None, threshold=0.5):
    """segment.segment's spans, with Silero's speech decisions instead of our energy's."""
    config = config or SegmenterConfig()
    energy = frame_energy_db(waveform, rate)
    frames = silero_speech(waveform, rate, threshold)
    hop, win = round(HOP_SECONDS * rate), round(WINDOW_SECONDS * rate)
    speech = _smooth(_to_hops(frames, SILERO_RATES[rate][0], len(energy), hop, win), config)
    return cut_spans(speech, energy, len(waveform), rate, config)
