"""A synthetic English speech corpus, made locally with eSpeak NG, for demos and smoke tests.

Why: a fresh machine with no data and no network should still be able to train a small ASR model
end to end in minutes. Sentences come from a small grammar and word list shipped in the repo
(`demo_words/grammar.json`); eSpeak NG reads them with many voices, speeds and pitches; light
noise and gain changes stop the model from keying on a perfectly clean signal. The output has the
layout fairseq's `prep_librispeech_data.py` writes (TSV manifests, a sentencepiece model, its
fairseq dictionary and `config.yaml`), so the same training code reads it and LibriSpeech alike.

Everything is a function of the seed: sentences, voices and noise come from one seeded
`SeedSequence`, and each utterance is synthesised by a freshly loaded, explicitly seeded
libespeak-ng (see espeak.py), so the audio does not depend on the number of workers or on
the order they finish in.

    python -m s2t_jax.data.demo_corpus --out data/demo --num_train 12000 --num_dev 200 --num_test 200

On a quiet 2-core CPU that takes 52 s (12,400 utterances, 9.6 h of audio, two worker processes).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from s2t_jax.data.prep.espeak import espeak_backend, espeak_version, synthesize
from s2t_jax.data.prep.sentences import GRAMMAR_PATH, make_sentences
from s2t_jax.frontend.fbank import num_frames

__all__ = ["VOICES", "build_corpus", "train_spm"]

SAMPLE_RATE = 16_000
# Bump when the synthesis or post-processing changes, so an old corpus on disk is regenerated.
GENERATOR_VERSION = 1
SPLITS = ("train", "dev", "test")

# Accents shipped in espeak-ng-data/lang/gmw ("en" is British English) crossed with the voice
# variants in espeak-ng-data/voices/!v that change the vocal tract (m1-m8, f1-f5); "" keeps the
# accent's own voice. 6 x 14 = 84 "speakers".
_ACCENTS = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
_VARIANTS = ("", *(f"m{i}" for i in range(1, 9)), *(f"f{i}" for i in range(1, 6)))
VOICES = tuple(f"{a}+{v}" if v else a for a in _ACCENTS for v in _VARIANTS)
RATE_WPM = (130, 190)
PITCH = (30, 70)  # eSpeak's 0-99 scale, relative to each variant's own base pitch
PEAK_DBFS = (-12.0, -1.0)  # gain change: the peak level each utterance is scaled to
SNR_DB = (25.0, 40.0)
PAD_S = (0.05, 0.3)  # leading and trailing silence (under the noise) added to each utterance


# ---------------------------------------------------------------------------- utterances


@dataclass(frozen=True)
class Utterance:
    """Everything that decides one file's bytes, drawn up front in the parent process."""

    uid: str
    audio: str  # path relative to the corpus directory
    text: str
    voice: str
    rate: int
    pitch: int
    peak_dbfs: float
    snr_db: float
    lead_s: float
    trail_s: float
    seed: int  # for eSpeak's breath noise and for the added noise


def _plan(sentences: dict[str, list[str]], rng: np.random.Generator, audio_format: str):
    plan = []
    for split in SPLITS:
        for i, text in enumerate(sentences[split]):
            uid = f"{split}-{i:05d}"
            plan.append(
                Utterance(
                    uid=uid,
                    audio=f"audio/{split}/{uid}.{audio_format}",
                    text=text,
                    voice=VOICES[int(rng.integers(len(VOICES)))],
                    rate=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
                    pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
                    peak_dbfs=round(float(rng.uniform(*PEAK_DBFS)), 2),
                    snr_db=round(float(rng.uniform(*SNR_DB)), 2),
                    lead_s=round(float(rng.uniform(*PAD_S)), 3),
                    trail_s=round(float(rng.uniform(*PAD_S)), 3),
                    seed=int(rng.integers(2**31)),
                )
            )
    return plan


def render(u: Utterance) -> np.ndarray:
    """The utterance as 16 kHz int16: synthesised, resampled, padded, gain set, noise added."""
    wave, rate_in = synthesize(u.text, u.voice, u.rate, u.pitch, u.seed)
    x = soxr.resample(wave.astype(np.float64) / 32768.0, rate_in, SAMPLE_RATE, quality="HQ")
    speech_power = np.mean(x[np.abs(x) > 0.01 * np.abs(x).max()] ** 2)
    x = np.concatenate(
        [np.zeros(round(u.lead_s * SAMPLE_RATE)), x, np.zeros(round(u.trail_s * SAMPLE_RATE))]
    )
    gain = 10 ** (u.peak_dbfs / 20) / np.abs(x).max()
    noise_std = np.sqrt(speech_power / 10 ** (u.snr_db / 10))
    x = (x + noise_std * np.random.default_rng(u.seed).standard_normal(len(x))) * gain
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)


def _write_utterance(args: tuple[str, Utterance]) -> int:
    out_dir, u = args
    wave = render(u)
    soundfile.write(Path(out_dir) / u.audio, wave, SAMPLE_RATE, subtype="PCM_16")
    return len(wave)


# ---------------------------------------------------------------------------- corpus


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def train_spm(out_dir: Path, texts: list[str], vocab_size: int) -> str:
    """fairseq's recipe (unigram, full character coverage, <s>=0 <pad>=1 </s>=2 <unk>=3).

    Writes `spm_unigram{vocab_size}.model` and its fairseq dictionary `.txt` under out_dir;
    returns that prefix.

    One thread keeps training reproducible, and the model comes back through `model_writer`
    rather than `model_prefix` because the prefix (an absolute path) would be stored in the
    model, making its bytes depend on where the corpus was written. hard_vocab_limit=False lets
    a tiny test corpus ask for more pieces than it can fill (the model then has fewer, and the
    dictionary matches it).
    """
    import sentencepiece as spm

    prefix = f"spm_unigram{vocab_size}"
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=1.0,
        hard_vocab_limit=False,
        num_threads=1,
        unk_id=3,
        bos_id=0,
        eos_id=2,
        pad_id=1,
        minloglevel=2,
    )
    tmp = out_dir / f"{prefix}.model.tmp"
    tmp.write_bytes(model.getvalue())
    os.replace(tmp, out_dir / f"{prefix}.model")
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    specials = {sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()}
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if i not in specials]
    _atomic_write(out_dir / f"{prefix}.txt", "".join(f"{p} 1\n" for p in pieces))
    return prefix


def _write_config(out_dir: Path, spm_prefix: str) -> None:
    import yaml

    config = {
        "bpe_tokenizer": {"bpe": "sentencepiece", "sentencepiece_model": f"{spm_prefix}.model"},
        "vocab_filename": f"{spm_prefix}.txt",
        "input_feat_per_channel": 80,
        "input_channels": 1,
        "specaugment": {
            "freq_mask_F": 27,
            "freq_mask_N": 1,
            "time_mask_N": 1,
            "time_mask_T": 100,
            "time_mask_p": 1.0,
            "time_wrap_W": 0,
        },
        "transforms": {"*": ["utterance_cmvn"], "_train": ["utterance_cmvn", "specaugment"]},
    }
    _atomic_write(out_dir / "config.yaml", yaml.safe_dump(config, default_flow_style=False))


def build_corpus(
    out_dir: str | os.PathLike,
    num_train: int = 12000,
    num_dev: int = 200,
    num_test: int = 200,
    seed: int = 0,
    vocab_size: int = 256,
    workers: int | None = None,
    audio_format: str = "flac",
    force: bool = False,
    long_form: bool = False,
    log=None,
) -> dict:
    """Write the corpus to `out_dir` and return the contents of its `corpus.json`.

    Does nothing if `out_dir/corpus.json` already records the same parameters (it is written last
    and atomically, so its presence means a complete corpus). `workers` only changes the speed.
    `long_form` also writes the long-form test set (data/prep/long_form.py) from the test split.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if audio_format not in ("flac", "wav"):
        raise ValueError(f"audio_format must be 'flac' or 'wav', not {audio_format!r}")
    out = Path(out_dir)
    grammar_text = GRAMMAR_PATH.read_bytes()
    params = {
        "num_train": num_train,
        "num_dev": num_dev,
        "num_test": num_test,
        "seed": seed,
        "vocab_size": vocab_size,
        "audio_format": audio_format,
        "generator_version": GENERATOR_VERSION,
        "grammar_sha256": hashlib.sha256(grammar_text).hexdigest(),
    }
    if long_form:  # only then, so corpora made before the option keep their fingerprint
        params["long_form"] = True
    marker = out / "corpus.json"
    if marker.exists() and not force:
        done = json.loads(marker.read_text())
        if done.get("params") == params:
            log(f"{out}: corpus already complete, not regenerating")
            return done
    backend = espeak_backend()  # fail before doing anything if eSpeak NG is missing
    if marker.exists():  # our own corpus with other parameters: drop its audio, keep the rest
        marker.unlink()
        shutil.rmtree(out / "audio", ignore_errors=True)
    start = time.monotonic()

    text_seed, synth_seed = np.random.SeedSequence(seed).spawn(2)
    counts = {"train": num_train, "dev": num_dev, "test": num_test}
    pool_of_sentences = make_sentences(sum(counts.values()), text_seed, json.loads(grammar_text))
    sentences, first = {}, 0
    for split in SPLITS:
        sentences[split] = pool_of_sentences[first : first + counts[split]]
        first += counts[split]
    plan = _plan(sentences, np.random.default_rng(synth_seed), audio_format)
    for split in SPLITS:
        (out / "audio" / split).mkdir(parents=True, exist_ok=True)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, min(workers or cores or 1, len(plan)))
    jobs = [(str(out), u) for u in plan]
    log(f"synthesising {len(plan)} utterances with eSpeak NG ({backend}), {workers} worker(s)")
    n_samples = []
    # spawn, not fork: the caller may hold threads (JAX) that a fork would copy in a bad state.
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_write_utterance, jobs, 8) if pool else map(_write_utterance, jobs)
        for n in results:
            n_samples.append(n)
            if len(n_samples) % 500 == 0:
                log(f"  {len(n_samples)}/{len(plan)} ({time.monotonic() - start:.0f} s)")
    except BaseException:
        if pool:
            pool.terminate()
        raise
    if pool:  # a clean exit lets the workers run their atexit clean-up (_fresh_library's copy)
        pool.close()
        pool.join()

    seconds = {s: 0.0 for s in SPLITS}
    rows = {s: [] for s in SPLITS}
    for u, n in zip(plan, n_samples):
        split = u.uid.split("-")[0]
        seconds[split] += n / SAMPLE_RATE
        rows[split].append(
            f"{u.uid}\t{u.audio}\t{num_frames(n, SAMPLE_RATE)}\t{u.text}\t{u.voice}\n"
        )
    for split in SPLITS:
        header = "id\taudio\tn_frames\ttgt_text\tspeaker\n"
        _atomic_write(out / f"{split}.tsv", header + "".join(rows[split]))
    spm_prefix = train_spm(out, sentences["train"], vocab_size)
    _write_config(out, spm_prefix)
    if long_form:
        from s2t_jax.data.prep.long_form import build_long_form

        build_long_form(out, [u for u in plan if u.uid.startswith("test-")], seed, log)

    info = {
        "params": params,
        "counts": counts,
        "hours": {s: round(seconds[s] / 3600, 4) for s in SPLITS},
        "espeak": espeak_version(),
        "spm_model": f"{spm_prefix}.model",
    }
    _atomic_write(marker, json.dumps(info, indent=2) + "\n")
    total_h = sum(seconds.values()) / 3600
    elapsed = time.monotonic() - start
    log(f"{out}: {len(plan)} utterances, {total_h:.2f} h of audio in {elapsed:.0f} s")
    return info


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num_train", type=int, default=12000)
    p.add_argument("--num_dev", type=int, default=200)
    p.add_argument("--num_test", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab_size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="default: one per CPU core")
    p.add_argument("--audio_format", choices=("flac", "wav"), default="flac")
    p.add_argument("--force", action="store_true", help="regenerate even if already complete")
    p.add_argument(
        "--long_form", action="store_true", help="also join the test split into long recordings"
    )
    a = p.parse_args(argv)
    build_corpus(**{k: v for k, v in vars(a).items() if k != "out"}, out_dir=a.out)
