"""Shared fixtures for the audio front-end tests: real recordings and small sentencepiece models.

The recordings come from ../shared/audio when it exists; on a clean clone the LibriSpeech
utterance in tests/assets stands in, and the 24 kHz WAV and 44.1 kHz stereo 24-bit FLAC are
synthesised from it in those exact formats, so no test skips for want of files.
Sentencepiece models are trained here, on a generated corpus, with fairseq's ids
(<s>=0, <pad>=1, </s>=2, <unk>=3), and written out in the hub's tokenizer layout.
"""

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr

REPO = Path(__file__).resolve().parents[2]
# S2T_SHARED_AUDIO lets a run pretend ../shared is absent (point it at an empty directory).
SHARED_AUDIO = Path(os.environ.get("S2T_SHARED_AUDIO", REPO / ".." / "shared" / "audio"))
ASSETS = REPO / "tests" / "assets"
LIBRI = "1272-128104-0000.flac"
TTS = "1089_134686_000007_000004.wav"
JFK = "jfk.flac"
MUSTC_LANGS = ["pt", "fr", "ru", "nl", "ro", "it", "es", "de"]


def _shared(name: str) -> Path | None:
    path = SHARED_AUDIO / name
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def speech_files(tmp_path_factory) -> dict[str, Path]:
    """{"libri": 16 kHz mono FLAC, "tts": 24 kHz mono 16-bit WAV, "jfk": 44.1 kHz stereo 24-bit FLAC}."""
    libri = _shared(LIBRI) or ASSETS / LIBRI
    files = {"libri": libri, "tts": _shared(TTS), "jfk": _shared(JFK)}
    if files["tts"] is None or files["jfk"] is None:
        out = tmp_path_factory.mktemp("synth_audio")
        x, rate = soundfile.read(libri, dtype="float64")  # [samples]
        if files["tts"] is None:
            files["tts"] = out / "synth_24k.wav"
            soundfile.write(files["tts"], soxr.resample(x, rate, 24000), 24000, subtype="PCM_16")
        if files["jfk"] is None:
            y = 0.8 * soxr.resample(x, rate, 44100)  # [samples]
            stereo = np.stack([y, 0.5 * y], axis=1)  # [samples, 2]
            files["jfk"] = out / "synth_44k1_stereo.flac"
            soundfile.write(files["jfk"], stereo, 44100, subtype="PCM_24")
    return files


@pytest.fixture(scope="session")
def speech_waves(speech_files) -> dict[str, np.ndarray]:
    """The three recordings decoded, down-mixed and resampled to 16 kHz."""
    from s2t_jax.frontend.audio import load_audio

    return {name: load_audio(path, 16000) for name, path in speech_files.items()}


def make_corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    """Deterministic pseudo-sentences: syllable words, some real words, case and punctuation."""
    rng = random.Random(seed)
    syllables = ["ka", "to", "re", "mi", "su", "an", "ber", "qui", "lo", "zen", "pha", "ick"]
    syllables += ["ou", "ng", "st", "ght", "ion", "ed", "sch", "ää", "é", "ço"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(300)]
    words += "the and of to in is that it was for on are with as his they at be this".split()
    lines = []
    for _ in range(n_lines):
        sent = [rng.choice(words) for _ in range(rng.randint(3, 12))]
        if rng.random() < 0.3:
            sent[0] = sent[0].capitalize()
        lines.append(" ".join(sent) + rng.choice(["", ".", "?", ",", "!"]))
    return lines


def train_spm(directory: Path, model_type: str, vocab_size: int, user_symbols=()) -> Path:
    """Train a fairseq-style sentencepiece model; write vocab.json + sentencepiece.bpe.model."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(make_corpus()) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "sentencepiece.bpe"),
        model_type=model_type,
        vocab_size=vocab_size,
        unk_id=3,
        bos_id=0,
        eos_id=2,
        pad_id=1,
        user_defined_symbols=list(user_symbols),
        character_coverage=1.0,
        hard_vocab_limit=model_type != "char",
        minloglevel=2,
        num_threads=1,
    )
    corpus.unlink()
    (directory / "sentencepiece.bpe.vocab").unlink()
    sp = spm.SentencePieceProcessor(model_file=str(directory / "sentencepiece.bpe.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}  # fairseq dict == spm ids
    (directory / "vocab.json").write_text(json.dumps(vocab, indent=2), encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def spm_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tokenizer directories (vocab.json + sentencepiece.bpe.model): unigram, bpe, char, mustc."""
    root = tmp_path_factory.mktemp("spm")
    lang_tokens = [f"<lang:{lang}>" for lang in MUSTC_LANGS]
    return {
        "unigram": train_spm(root / "unigram", "unigram", 150),
        "bpe": train_spm(root / "bpe", "bpe", 150),
        "char": train_spm(root / "char", "char", 60),
        "mustc": train_spm(root / "mustc", "unigram", 150, user_symbols=lang_tokens),
    }


@pytest.fixture(scope="session")
def quiet_transformers():
    """transformers, with its sampling-rate and deprecation chatter silenced."""
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture(scope="module")
def ref(quiet_transformers):
    """transformers' extractor, utterance CMVN on."""
    return quiet_transformers.Speech2TextFeatureExtractor()


@pytest.fixture(scope="module")
def ref_raw(quiet_transformers):
    """transformers' extractor without CMVN: its raw log-mel."""
    return quiet_transformers.Speech2TextFeatureExtractor(do_ceptral_normalize=False)


@pytest.fixture(scope="module")
def mixed_batch(speech_waves):
    """Five utterances of different lengths: real speech, noise and a chirp."""
    from tests.frontend.signals import SR, synthetic

    synth = synthetic()
    return [
        speech_waves["tts"],
        synth["white_noise"][:12345],
        speech_waves["libri"],
        synth["chirp"],
        speech_waves["jfk"][: 3 * SR],
    ]
