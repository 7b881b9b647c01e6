"""Prepare CoVoST 2 (Common Voice clips) for ASR or ST, as fairseq's prep_covost_data.py does.

Input in `<data_root>/<src_lang>/`: Common Voice's `validated.tsv` and `clips/*.mp3`, and
CoVoST 2's `covost_v2.<src>_<tgt>.tsv` (or its `.tsv.tar.gz`, unpacked here; nothing is
downloaded: get it from https://dl.fbaipublicfiles.com/covost/). For ASR (no --tgt-lang) the
tsv of <src>_en (or en_de for English) is read for its `split` column only, as fairseq does.
Clips are the rows of validated.tsv that the CoVoST tsv also lists (in validated.tsv's order);
`train` takes the splits `train` and `train_covost`, `dev` and `test` their own.
Output in `<data_root>/<src_lang>/` (fairseq's layout; task = asr_<src> or st_<src>_<tgt>):
  fbank80.zip                 80-dim Kaldi fbank per clip (.npy, uncompressed)
  <split>_<task>.tsv          id (the clip's name without .mp3), audio, n_frames, tgt_text (the
                              sentence for asr, the translation for st), speaker (client_id);
                              fairseq's filter_manifest_df applied
  spm_char_<task>.{model,vocab,txt}   the recipe's character vocabulary (--vocab-type char, as
                              covost_example.md runs it); unigram/bpe with --vocab-size
  config_<task>.yaml          vocabulary, SpecAugment "lb", utterance CMVN
  summary_<task>.json         hours and counts per split, unreadable/empty and filtered ids

Clips are decoded by s2t_jax.frontend.audio (soundfile reads MP3 with libsndfile >= 1.1) and
resampled to 16 kHz. fairseq computes fbank at the clip's own rate (48 kHz for Common Voice:
mel bands up to 24 kHz); `--sample-rate 0` does that too, to match its released models.

    python -m s2t_jax.data.prep_covost --data-root /data/covost --src-lang en
    python -m s2t_jax.data.prep_covost --data-root /data/covost --src-lang fr --tgt-lang en
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import tarfile

from s2t_jax.data.manifest import Utterance
from s2t_jax.data.prep import common

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
# CoVoST 2's X->En sources and En->X targets
XX_EN = "fr de es ca it ru zh-CN pt fa et mn nl tr ar sv-SE lv sl ta ja id cy".split()
EN_XX = "de tr fa sv-SE mn zh-CN cy ca sl et id ar ta lv ja".split()
COVOST_URL = "https://dl.fbaipublicfiles.com/covost/covost_v2.{}_{}.tsv.tar.gz"
CHUNK = 256  # clips per resumable unit


def read_tsv(path: str) -> list[dict[str, str]]:
    """A tab-separated file with a header, without quoting (Common Voice and CoVoST write
    sentences with quotes in them)."""
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def covost_tsv(root: str, src: str, tgt: str) -> str:
    """The path of covost_v2.<src>_<tgt>.tsv, unpacking its .tar.gz when only that is here."""
    name = f"covost_v2.{src}_{tgt}.tsv"
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        archive = path + ".tar.gz"
        if not os.path.isfile(archive):
            raise FileNotFoundError(
                f"{path}: not found; download {COVOST_URL.format(src, tgt)} into {root}"
            )
        with tarfile.open(archive) as tar:
            member = tar.getmember(name)
            tar.extract(member, root, filter="data")
    return path


def read_clips(root: str, src: str, tgt: str | None) -> dict[str, list[dict]]:
    """split -> [{path, sentence, translation, client_id}], in validated.tsv's order."""
    if tgt is not None:
        if "en" not in (src, tgt) or (src == "en" and tgt not in EN_XX):
            raise ValueError(f"{src}->{tgt}: CoVoST 2 has En->{EN_XX} and {XX_EN}->En")
        if src != "en" and src not in XX_EN:
            raise ValueError(f"{src}->{tgt}: CoVoST 2 has {XX_EN}->En")
    pair_tgt = tgt or ("de" if src == "en" else "en")  # ASR: any pair gives the splits
    covost = {}
    for row in read_tsv(covost_tsv(root, src, pair_tgt)):
        covost.setdefault(row["path"], []).append(row)
    out = {s: [] for s in SPLITS}
    for cv in read_tsv(os.path.join(root, "validated.tsv")):
        for row in covost.get(cv["path"], ()):
            split = "train" if row["split"] in ("train", "train_covost") else row["split"]
            if split in out:
                out[split].append(
                    {
                        "path": cv["path"],
                        "sentence": cv["sentence"],
                        "client_id": cv["client_id"],
                        "translation": row.get("translation", ""),
                    }
                )
    return out


def clip_features(unit: common.Unit) -> dict:
    """A chunk of clips: decode, resample, fbank; unreadable or empty clips reported by id."""
    from s2t_jax.frontend.audio import AudioError, read_sound, resample, validate_waveform

    features, bad, seconds = {}, {}, {}
    for uid, (mp3, target_rate) in unit.items:
        try:  # load_audio's steps, with 0 meaning the clip's own rate
            data, file_rate = read_sound(mp3, mp3)  # [samples, channels]
            wave = validate_waveform(data, name=mp3, channel_axis=-1)  # [samples]
            rate = target_rate or file_rate
            wave = resample(wave, file_rate, rate, name=mp3)
        except AudioError as e:  # named by the clip alone: the same summary wherever it runs
            bad[uid] = str(e).replace(mp3, os.path.basename(mp3))
            continue
        feats = common.fbank(wave, rate)
        if len(feats) == 0:
            bad[uid] = f"clip shorter than one frame ({len(wave)} samples)"
            continue
        features[uid] = feats
        seconds[uid] = len(wave) / rate
    return common.save_unit(unit, features, bad, seconds)


def prepare(
    data_root: str,
    src_lang: str,
    tgt_lang: str | None = None,
    vocab_type: str = "char",
    vocab_size: int = 1000,
    sample_rate: int = common.SAMPLING_RATE,
    num_workers: int = 1,
    spm_threads: int = 1,
    absolute_paths: bool = False,
    keep_features: bool = False,
) -> dict:
    """Features, manifests, vocabulary and config for one source language (and target);
    -> the summary."""
    root = os.path.abspath(os.path.join(data_root, src_lang))
    if not os.path.isdir(root):
        raise NotADirectoryError(f"{root} does not exist")
    clips = read_clips(root, src_lang, tgt_lang)
    feature_dir = os.path.join(root, "fbank80")
    items = []
    seen = set()
    for split in SPLITS:
        for c in clips[split]:
            uid = c["path"].replace(".mp3", "")
            if uid not in seen:
                seen.add(uid)
                items.append((uid, (os.path.join(root, "clips", c["path"]), sample_rate)))
    units = [
        common.Unit(key=f"{i // CHUNK:06d}", feature_dir=feature_dir, items=tuple(chunk))
        for i, chunk in ((i, items[i : i + CHUNK]) for i in range(0, len(items), CHUNK))
    ]
    results = common.run_units(clip_features, units, num_workers, f"{src_lang} fbank")
    frames, bad, seconds = {}, {}, {}
    for r in results.values():
        frames.update(r["frames"])
        bad.update(r["bad"])
        seconds.update(r["seconds"])

    zip_path = os.path.join(root, "fbank80.zip")
    common.write_zip(
        zip_path,
        [
            (f"{uid}.npy", os.path.join(feature_dir, f"{uid}.npy"))
            for uid, _ in items
            if uid in frames
        ],
    )
    locations = common.zip_locations(zip_path, root, absolute_paths)

    task = f"asr_{src_lang}" if tgt_lang is None else f"st_{src_lang}_{tgt_lang}"
    summary = {"corpus": "covost2", "task": task}
    splits = []
    for split in SPLITS:
        rows, split_bad = [], {}
        for c in clips[split]:
            uid = c["path"].replace(".mp3", "")
            if uid not in frames:
                split_bad[uid] = bad.get(uid, "no features")
                continue
            rows.append(
                Utterance(
                    id=uid,
                    audio=locations[uid][0],
                    n_frames=locations[uid][1],
                    tgt_text=c["sentence"] if tgt_lang is None else c["translation"],
                    speaker=c["client_id"],
                )
            )
        splits.append((split, rows, split_bad))
    summary["splits"], train_text = common.write_split_manifests(root, task, splits, seconds)
    common.finish_prep(
        root,
        task,
        summary,
        train_text,
        vocab_type,
        vocab_size,
        spm_threads,
        feature_dir,
        keep_features,
        specaugment_policy="lb",
        absolute=absolute_paths,
    )
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", "-d", required=True, help="folder holding <src_lang>/")
    parser.add_argument("--src-lang", "-s", required=True)
    parser.add_argument("--tgt-lang", "-t", default=None, help="none: ASR")
    parser.add_argument("--vocab-type", default="char", choices=["bpe", "unigram", "char"])
    parser.add_argument("--vocab-size", default=1000, type=int)
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=common.SAMPLING_RATE,
        help="resample clips to this rate before fbank; 0 keeps the clip's rate (fairseq)",
    )
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--spm-threads", type=int, default=1, help="sentencepiece threads (1: byte-identical)"
    )
    parser.add_argument("--absolute-paths", action="store_true", help="as fairseq writes them")
    parser.add_argument("--keep-features", action="store_true", help="keep fbank80/ .npy files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    prepare(
        args.data_root,
        args.src_lang,
        args.tgt_lang,
        args.vocab_type,
        args.vocab_size,
        args.sample_rate,
        args.num_workers,
        args.spm_threads,
        args.absolute_paths,
        args.keep_features,
    )
