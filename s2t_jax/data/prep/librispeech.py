"""Prepare a LibriSpeech-layout folder for training, as fairseq's prep_librispeech_data.py does.

Input: `<input_root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt` (lines
`<utt-id> <TEXT>`) next to `<utt-id>.flac`, for splits such as train-clean-100 or dev-clean.
Output in `<output_root>` (fairseq's layout, readable by fairseq-train too):
  <split>.tsv                 id, audio, n_frames, tgt_text (lower-cased), speaker
  fbank80.zip                 80-dim Kaldi fbank per utterance as .npy, uncompressed
                              (`--features zip`, the recipe); or audio paths to the flac files
                              (`--features audio`: no feature pass, fbank computed by the
                              loader's workers each epoch)
  spm_unigram10000.{model,vocab,txt}   sentencepiece trained on the train splits' text with
                              fairseq's flags (--unk_id=3 --bos_id=0 --eos_id=2 --pad_id=1,
                              character_coverage 1.0) and its fairseq dictionary
  config.yaml                 vocabulary, tokenizer, utterance CMVN, SpecAugment policy "ld"

Audio paths are written relative to the output root (fairseq writes absolute ones; pass
--absolute_paths for that), so the folder can move.

    python -m s2t_jax.data.prep_librispeech --input_root /data/LibriSpeech \
        --output_root /data/librispeech --vocab_type unigram --vocab_size 10000
"""

from __future__ import annotations

import argparse
import glob
import logging
import multiprocessing
import os
import shutil

import numpy as np
from tqdm import tqdm

from s2t_jax.data.manifest import Utterance, create_zip, write_manifest, zip_manifest
from s2t_jax.data.prep.common import train_sentencepiece, write_config_yaml

log = logging.getLogger(__name__)

SPLITS = (
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
)
NUM_MEL_BINS = 80
SAMPLING_RATE = 16000


def find_utterances(split_dir: str) -> list[tuple[str, str, str, str]]:
    """-> [(utt_id, flac_path, text, speaker)] sorted by id, from every *.trans.txt."""
    out = []
    for trans in sorted(glob.glob(os.path.join(split_dir, "**", "*.trans.txt"), recursive=True)):
        folder = os.path.dirname(trans)
        with open(trans, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                uid, _, text = line.strip().partition(" ")
                flac = os.path.join(folder, f"{uid}.flac")
                out.append((uid, flac, text, uid.split("-")[0]))
    return sorted(out)


def _fbank(job):
    """(flac, npy) -> frames; runs in a worker process."""
    from s2t_jax.frontend.audio import load_audio
    from s2t_jax.frontend.fbank import kaldi_fbank

    flac, npy = job
    feats = kaldi_fbank([load_audio(flac, SAMPLING_RATE)], SAMPLING_RATE, NUM_MEL_BINS)[0]
    np.save(npy, feats.astype(np.float32))
    return len(feats)


def _num_frames(flac: str) -> int:
    import soundfile

    from s2t_jax.frontend.fbank import num_frames

    info = soundfile.info(flac)
    samples = int(round(info.frames * SAMPLING_RATE / info.samplerate))
    return num_frames(samples, SAMPLING_RATE)


def prepare(
    input_root: str,
    output_root: str,
    splits=None,
    vocab_type: str = "unigram",
    vocab_size: int = 10000,
    features: str = "zip",
    num_workers: int = 1,
    absolute_paths: bool = False,
) -> list[str]:
    """Writes manifests, features, vocabulary and config.yaml; returns the splits done."""
    out_root = os.path.abspath(output_root)
    os.makedirs(out_root, exist_ok=True)
    splits = [s for s in (splits or SPLITS) if os.path.isdir(os.path.join(input_root, s))]
    if not splits:
        raise FileNotFoundError(f"{input_root}: none of the splits {list(SPLITS)} found")
    found = {s: find_utterances(os.path.join(input_root, s)) for s in splits}

    def audio_path(path: str) -> str:
        path = os.path.abspath(path)
        return path if absolute_paths else os.path.relpath(path, out_root)

    locations: dict[str, tuple[str, int]] = {}
    if features == "zip":
        feature_dir = os.path.join(out_root, "fbank80")
        os.makedirs(feature_dir, exist_ok=True)
        jobs = [
            (flac, os.path.join(feature_dir, f"{uid}.npy"))
            for s in splits
            for uid, flac, _, _ in found[s]
        ]
        if num_workers > 1:
            with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
                for _ in tqdm(pool.imap(_fbank, jobs, chunksize=16), total=len(jobs), desc="fbank"):
                    pass
        else:
            for job in tqdm(jobs, desc="fbank"):
                _fbank(job)
        zip_path = os.path.join(out_root, "fbank80.zip")
        create_zip(zip_path, [npy for _, npy in jobs])
        shutil.rmtree(feature_dir)
        for uid, (ptr, frames) in zip_manifest(zip_path).items():
            path, offset, length = ptr.rsplit(":", 2)
            locations[uid] = (f"{audio_path(path)}:{offset}:{length}", frames)
    elif features == "audio":
        for s in splits:
            for uid, flac, _, _ in tqdm(found[s], desc=f"scan {s}"):
                locations[uid] = (audio_path(flac), _num_frames(flac))
    else:
        raise ValueError(f"features={features!r}: expected zip or audio")

    train_text = []
    for s in splits:
        rows = [
            Utterance(
                id=uid,
                audio=locations[uid][0],
                n_frames=locations[uid][1],
                tgt_text=text.lower(),
                speaker=speaker,
            )
            for uid, _, text, speaker in found[s]
        ]
        write_manifest(os.path.join(out_root, f"{s}.tsv"), rows)
        if s.startswith("train"):
            train_text.extend(r.tgt_text for r in rows)
        log.info("%s: %d utterances", s, len(rows))
    if not train_text:
        raise ValueError("no train-* split found: the vocabulary is trained on train text")
    prefix = f"spm_{vocab_type}{'' if vocab_type == 'char' else vocab_size}"
    train_sentencepiece(
        train_text,
        os.path.join(out_root, prefix),
        vocab_type,
        vocab_size,
        hard_vocab_limit=vocab_type != "char",
    )
    write_config_yaml(out_root, "config.yaml", f"{prefix}.model", specaugment_policy="ld")
    return splits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input_root", required=True, help="folder holding the split folders")
    parser.add_argument("--output_root", required=True)
    parser.add_argument("--splits", default=",".join(SPLITS))
    parser.add_argument("--vocab_type", default="unigram", choices=["unigram", "bpe", "char"])
    parser.add_argument("--vocab_size", type=int, default=10000)
    parser.add_argument("--features", default="zip", choices=["zip", "audio"])
    parser.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--absolute_paths", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    prepare(
        args.input_root,
        args.output_root,
        args.splits.split(","),
        args.vocab_type,
        args.vocab_size,
        args.features,
        args.num_workers,
        args.absolute_paths,
    )
