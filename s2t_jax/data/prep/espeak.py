"""eSpeak NG synthesis, reproducible: the same text, voice and seed give the same samples.

Two backends: the libespeak-ng shipped by the espeakng-loader wheel (preferred: no subprocess,
pinned version, its breath noise seeded) or an `espeak-ng` binary on PATH. libespeak-ng keeps
synthesis state in static variables, so each utterance is synthesised by a freshly loaded copy
of the library (see `_fresh_library`); the audio then depends on nothing said before it.
"""

from __future__ import annotations

import _ctypes
import atexit
import contextlib
import ctypes
import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile


class EspeakUnavailable(RuntimeError):
    """Neither the espeakng-loader package nor an espeak-ng binary is installed."""


def espeak_backend() -> str:
    """'library' (the espeakng-loader wheel, preferred: no subprocess, pinned version) or
    'binary' (an espeak-ng on PATH); raises EspeakUnavailable if there is neither."""
    try:
        import espeakng_loader

        if Path(espeakng_loader.get_library_path()).exists():
            return "library"
    except (ImportError, RuntimeError):
        pass
    if shutil.which("espeak-ng"):
        return "binary"
    raise EspeakUnavailable(
        "eSpeak NG is needed to synthesise the demo corpus: `pip install espeakng-loader` "
        "(see requirements.txt), or install an `espeak-ng` binary (e.g. apt-get install espeak-ng)"
    )


_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_POS_CHARACTER, _CHARS_UTF8 = 1, 1
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1


class _Event(ctypes.Structure):
    """speak_lib.h's espeak_EVENT: what eSpeak reports as it speaks (words, sentences, ...)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character position of the word
        ("length", ctypes.c_int),  # its length in characters
        ("audio_position", ctypes.c_int),  # ms from the start of the output
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_private_copy: str | None = None


@contextlib.contextmanager
def _fresh_library():
    """libespeak-ng, newly loaded, and unloaded again on exit.

    Why: libespeak-ng keeps synthesis state in static variables (e.g. the pitch-flutter phase)
    that carry over from one utterance to the next, so the same text gives different samples
    depending on what was spoken before. Unloading the library (dlclose) and loading it again
    costs a few milliseconds and starts every utterance from the same state. dlclose only
    unloads a library nobody else holds, and other code in the process may have loaded
    libespeak-ng (or a leaked ctypes handle may hold it), so we load a private copy of the file,
    made once per process, and check that it really went away.
    """
    global _private_copy
    import espeakng_loader

    if _private_copy is None or not os.path.exists(_private_copy):
        tmp = tempfile.mkdtemp(prefix="s2t-espeak-")
        atexit.register(shutil.rmtree, tmp, True)
        _private_copy = shutil.copy(espeakng_loader.get_library_path(), tmp)
    lib = ctypes.CDLL(_private_copy)
    try:
        yield lib
    finally:
        _ctypes.dlclose(lib._handle)
    try:
        still = ctypes.CDLL(_private_copy, mode=os.RTLD_NOLOAD)
    except OSError:
        return  # unloaded, as wanted
    _ctypes.dlclose(still._handle)
    raise RuntimeError("libespeak-ng stayed loaded after dlclose; its state would leak")


def _synth_library(text: str, voice: str, rate: int, pitch: int, seed: int, words=None):
    """Synthesise with libespeak-ng's classic API, from a fresh library state (see above).

    The breath noise of some variants (f2, f3, f5) comes from a generator that eSpeak NG seeds
    with the clock at initialisation; espeak_ng_SetRandSeed (eSpeak NG >= 1.52) seeds it from
    `seed` instead, so those voices are reproducible too. `words`, a list, receives
    (text_position, length, audio_position ms) of each word event.
    """
    import espeakng_loader

    chunks: list[np.ndarray] = []

    def on_audio(wav, n, events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        if words is not None and events:
            event = ctypes.cast(events, ctypes.POINTER(_Event))
            i = 0
            while event[i].type != _EVENT_LIST_TERMINATED:
                if event[i].type == _EVENT_WORD:
                    e = event[i]
                    words.append((e.text_position, e.length, e.audio_position))
                i += 1
        return 0  # 0: go on synthesising

    callback = _SynthCallback(on_audio)  # must outlive espeak_Synth
    with _fresh_library() as lib:
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        data = espeakng_loader.get_data_path().encode()
        sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT
        )
        if sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data path {data.decode()})")
        lib.espeak_SetSynthCallback(callback)
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
        lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint]
        lib.espeak_Synth.argtypes += [ctypes.c_int, ctypes.c_uint, ctypes.c_uint]
        lib.espeak_Synth.argtypes += [ctypes.c_void_p, ctypes.c_void_p]
        raw = text.encode()
        err = lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0 or lib.espeak_Synchronize() != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) on {text!r}")
        lib.espeak_Terminate()
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.int16)), sample_rate


def _synth_binary(text: str, voice: str, rate: int, pitch: int, seed: int):
    """Fallback: the espeak-ng command line writes a 22,050 Hz WAV to stdout.

    Each call is a fresh process, so no state carries over, but the command line cannot seed the
    breath noise of f2/f3/f5: those voices are as reproducible as the installed espeak-ng makes
    them (1.51 is; 1.52 seeds from the clock).
    """
    cmd = ["espeak-ng", "--stdout", "-v", voice, "-s", str(rate), "-p", str(pitch), text]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"{' '.join(cmd)!r} failed: {proc.stderr.decode(errors='replace')}")
    wave, sample_rate = soundfile.read(io.BytesIO(proc.stdout), dtype="int16")
    return wave.reshape(len(wave), -1)[:, 0], sample_rate


def synthesize(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50, seed: int = 0):
    """Raw eSpeak NG output for `text`: (int16 samples, sample rate, normally 22,050 Hz)."""
    fn = _synth_library if espeak_backend() == "library" else _synth_binary
    wave, sample_rate = fn(text, voice, rate, pitch, seed)
    if not np.any(wave):
        raise RuntimeError(f"eSpeak NG produced no audio for {text!r} with voice {voice!r}")
    return wave, sample_rate


def synthesize_with_words(
    text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50, seed: int = 0
):
    """As `synthesize`, plus the time eSpeak NG starts each word, from its word events:
    (int16 samples, sample rate, [(word, start seconds)]). Needs the library backend (the
    command line does not report events). The samples equal `synthesize`'s."""
    if espeak_backend() != "library":
        raise EspeakUnavailable("word times need libespeak-ng (pip install espeakng-loader)")
    events: list[tuple[int, int, int]] = []
    wave, sample_rate = _synth_library(text, voice, rate, pitch, seed, words=events)
    raw = text.encode()
    out = []
    for position, length, ms in sorted(set(events), key=lambda e: e[2]):
        # eSpeak counts characters (UTF-8 input, _CHARS_UTF8); the demo's text is ASCII.
        word = raw[position - 1 : position - 1 + length].decode(errors="replace")
        out.append((word, ms / 1000.0))
    return wave, sample_rate, out


def espeak_version() -> str:
    if espeak_backend() == "library":
        with _fresh_library() as lib:
            lib.espeak_Info.restype = ctypes.c_char_p
            return "libespeak-ng " + lib.espeak_Info(None).decode()
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True)
    return out.stdout.strip()
