"""Prepare MuST-C (En->X) for ASR or ST, as fairseq's prep_mustc_data.py does.

Input, the release as unpacked: `<data_root>/en-<xx>/data/<split>/wav/<talk>.wav` and
`<data_root>/en-<xx>/data/<split>/txt/<split>.{yaml,en,<xx>}`, where the yaml lists one segment
per line of the text files (`offset`, `duration` in seconds, `wav`, `speaker_id`).
Output in `<data_root>/en-<xx>/` (fairseq's layout):
  fbank80.zip                 80-dim Kaldi fbank per segment (.npy, uncompressed)
  <split>_<task>.tsv          id, audio, n_frames, tgt_text (English for asr, <xx> for st),
                              speaker; segments of < 5 frames, empty text or (train) > 3000
                              frames dropped as fairseq's filter_manifest_df does
  spm_<type><size>_<task>.{model,vocab,txt}   sentencepiece on the train text, fairseq's flags
  config_<task>.yaml          vocabulary, SpecAugment "lb", utterance (or global) CMVN
  gcmvn.npz                   with --cmvn-type global: stats of the first train segments
  summary_<task>.json         hours and counts per split, unreadable/empty and filtered ids
With --joint (after the per-language runs): one vocabulary and config_<task>.yaml in
`<data_root>` over the languages' train text (`<lang:xx>` symbols and prepend_tgt_lang_tag for
st, SpecAugment "ld"), and `<split>_<xx>_<task>.tsv` manifests there.

Segment ids are fairseq's: `<talk>_<i>`, i counting the talk's segments sorted by their offset
*as written in the yaml* (fairseq loads it with yaml's BaseLoader, so "100.5" sorts before
"16.6"); keeping that order keeps the ids of fairseq-made manifests.

    python -m s2t_jax.data.prep_mustc --data-root /data/mustc --task asr --vocab-size 5000
    python -m s2t_jax.data.prep_mustc --data-root /data/mustc --task st --vocab-size 8000
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import logging
import os
import shutil

import numpy as np
import yaml

from s2t_jax.data.manifest import Utterance, read_manifest, write_manifest
from s2t_jax.data.prep import common

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "tst-COMMON", "tst-HE")
LANGUAGES = ("de", "es", "fr", "it", "nl", "pt", "ro", "ru")
# fairseq reads the yaml with BaseLoader (strings only); the C one is the same, and much faster
_YAML_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


@dataclasses.dataclass(frozen=True)
class Segment:
    id: str
    wav: str
    offset: int  # in samples of the wav file
    frames: int  # samples
    sample_rate: int
    src_text: str
    tgt_text: str
    speaker: str


def read_segments(data_root: str, lang: str, split: str) -> list[list[Segment]]:
    """The split's segments, one list per talk, in fairseq's order and with its ids."""
    import soundfile

    base = os.path.join(data_root, f"en-{lang}", "data", split)
    wav_root, txt_root = os.path.join(base, "wav"), os.path.join(base, "txt")
    with open(os.path.join(txt_root, f"{split}.yaml"), encoding="utf-8") as f:
        segments = yaml.load(f, Loader=_YAML_LOADER)  # every value a string, as fairseq
    texts = {}
    for side in ("en", lang):
        with open(os.path.join(txt_root, f"{split}.{side}"), encoding="utf-8") as f:
            texts[side] = [line.strip() for line in f]
        if len(texts[side]) != len(segments):
            raise ValueError(
                f"{txt_root}: {len(segments)} segments in {split}.yaml but "
                f"{len(texts[side])} lines in {split}.{side}"
            )
    for i, seg in enumerate(segments):
        seg["_src"], seg["_tgt"] = texts["en"][i], texts[lang][i]
    talks = []
    for wav_name, group in itertools.groupby(segments, key=lambda s: s["wav"]):
        wav = os.path.join(wav_root, wav_name)
        try:
            rate = int(soundfile.info(wav).samplerate)
        except (RuntimeError, OSError, soundfile.SoundFileError):
            rate = common.SAMPLING_RATE  # unreadable: every segment is reported by the worker
        stem = os.path.splitext(wav_name)[0]
        talk = []
        for i, seg in enumerate(sorted(group, key=lambda s: s["offset"])):
            talk.append(
                Segment(
                    id=f"{stem}_{i}",
                    wav=wav,
                    offset=int(float(seg["offset"]) * rate),
                    frames=int(float(seg["duration"]) * rate),
                    sample_rate=rate,
                    src_text=seg["_src"],
                    tgt_text=seg["_tgt"],
                    speaker=seg.get("speaker_id", ""),
                )
            )
        talks.append(talk)
    return talks


def talk_features(unit: common.Unit) -> dict:
    """One talk: read each segment, resample to 16 kHz, fbank; bad segments reported by id."""
    import soundfile

    from s2t_jax.frontend.audio import AudioError, resample, validate_waveform

    features, bad = {}, {}
    wav = unit.items[0][1][0]
    try:
        sound = soundfile.SoundFile(wav)
    except (RuntimeError, OSError, soundfile.SoundFileError) as e:
        sound = None
        error = f"unreadable wav {os.path.basename(wav)} ({e})"
    with sound if sound is not None else contextlib.nullcontext():
        for uid, (_, offset, frames) in unit.items:
            if sound is None:
                bad[uid] = error
                continue
            if frames <= 0 or offset < 0:
                bad[uid] = f"empty segment (offset {offset}, {frames} samples)"
                continue
            try:
                sound.seek(min(offset, sound.frames))
                data = sound.read(frames, dtype="float32", always_2d=True)  # [samples, ch]
                if len(data) == 0:
                    bad[uid] = f"no audio at sample {offset}: the wav has {sound.frames}"
                    continue
                wave = validate_waveform(data, name=uid, channel_axis=-1)  # [samples]
                wave = resample(wave, sound.samplerate, common.SAMPLING_RATE, name=uid)
            except (AudioError, RuntimeError, soundfile.SoundFileError) as e:
                bad[uid] = f"unreadable segment ({e})"
                continue
            feats = common.fbank(wave)
            if len(feats) == 0:
                bad[uid] = f"segment shorter than one frame ({len(wave)} samples)"
                continue
            features[uid] = feats
    return common.save_unit(unit, features, bad)


def prepare_language(
    data_root: str,
    lang: str,
    task: str,
    vocab_type: str = "unigram",
    vocab_size: int = 8000,
    cmvn_type: str = "utterance",
    gcmvn_max_num: int = 150000,
    num_workers: int = 1,
    spm_threads: int = 1,
    absolute_paths: bool = False,
    keep_features: bool = False,
) -> dict:
    """One language pair: features, manifests, vocabulary, config; -> the summary."""
    out_root = os.path.abspath(os.path.join(data_root, f"en-{lang}"))
    splits = [s for s in SPLITS if os.path.isdir(os.path.join(out_root, "data", s))]
    if "train" not in splits:
        raise FileNotFoundError(f"{out_root}/data/train: the vocabulary is trained on train")
    talks = {s: read_segments(data_root, lang, s) for s in splits}
    feature_dir = os.path.join(out_root, "fbank80")
    units = [
        common.Unit(
            key=f"{split}-{i:05d}-{os.path.basename(talk[0].wav)}",
            feature_dir=feature_dir,
            items=tuple((s.id, (s.wav, s.offset, s.frames)) for s in talk),
        )
        for split in splits
        for i, talk in enumerate(talks[split])
    ]
    results = common.run_units(talk_features, units, num_workers, f"en-{lang} fbank")
    frames, bad = {}, {}
    for r in results.values():
        frames.update(r["frames"])
        bad.update(r["bad"])
    ordered = [seg for s in splits for talk in talks[s] for seg in talk if seg.id in frames]

    gcmvn_name = None
    if cmvn_type == "global":
        train = [seg.id for talk in talks["train"] for seg in talk if seg.id in frames]
        stats = common.gcmvn_stats(
            np.load(os.path.join(feature_dir, f"{uid}.npy")) for uid in train[:gcmvn_max_num]
        )
        gcmvn_name = "gcmvn.npz"
        common.write_gcmvn(os.path.join(out_root, gcmvn_name), *stats)

    zip_path = os.path.join(out_root, "fbank80.zip")
    common.write_zip(
        zip_path, [(f"{s.id}.npy", os.path.join(feature_dir, f"{s.id}.npy")) for s in ordered]
    )
    locations = common.zip_locations(zip_path, out_root, absolute_paths)

    summary = {"corpus": "mustc", "lang": lang, "task": task, "splits": {}}
    train_text = []
    for split in splits:
        segs = [seg for talk in talks[split] for seg in talk]
        rows = [
            Utterance(
                id=seg.id,
                audio=locations[seg.id][0],
                n_frames=locations[seg.id][1],
                tgt_text=seg.src_text if task == "asr" else seg.tgt_text,
                speaker=seg.speaker,
            )
            for seg in segs
            if seg.id in frames
        ]
        if split == "train":
            train_text.extend(r.tgt_text for r in rows)  # before filtering, as fairseq
        kept, dropped = common.filter_rows(rows, is_train=split.startswith("train"))
        write_manifest(os.path.join(out_root, f"{split}_{task}.tsv"), kept)
        seconds = {seg.id: seg.frames / seg.sample_rate for seg in segs}
        summary["splits"][split] = {
            "utterances": len(kept),
            "hours": sum(seconds[r.id] for r in kept) / 3600,
            "bad": {seg.id: bad[seg.id] for seg in segs if seg.id in bad},
            "filtered": dropped,
        }

    prefix = common.spm_prefix(vocab_type, vocab_size, task)
    common.train_sentencepiece(
        train_text, os.path.join(out_root, prefix), vocab_type, vocab_size, None, spm_threads
    )
    common.write_config_yaml(
        out_root,
        f"config_{task}.yaml",
        prefix + ".model",
        specaugment_policy="lb",
        cmvn_type=cmvn_type,
        gcmvn_path=gcmvn_name,
        absolute=absolute_paths,
    )
    common.write_summary(os.path.join(out_root, f"summary_{task}.json"), summary)
    if not keep_features:
        shutil.rmtree(feature_dir)
    return summary


def prepare_joint(
    data_root: str,
    task: str,
    langs=LANGUAGES,
    vocab_type: str = "unigram",
    vocab_size: int = 10000,
    spm_threads: int = 1,
    absolute_paths: bool = False,
) -> None:
    """fairseq's process_joint: one vocabulary over the languages' train manifests (with
    `<lang:xx>` symbols for st), config_<task>.yaml in `data_root`, and per-language manifests
    there. fairseq symlinks them; we write copies whose audio paths point into `en-<xx>/` and
    that carry src_lang/tgt_lang columns (the `<lang:xx>` tag comes from tgt_lang)."""
    root = os.path.abspath(data_root)
    missing = [lang for lang in langs if not os.path.isdir(os.path.join(root, f"en-{lang}"))]
    if missing:
        raise FileNotFoundError(f"{root}: no en-{missing[0]} (prepare every language first)")
    texts = []
    for lang in langs:
        rows = read_manifest(os.path.join(root, f"en-{lang}", f"train_{task}.tsv"))
        texts.extend(r.tgt_text for r in rows)
    symbols = [f"<lang:{lang}>" for lang in langs] if task == "st" else None
    prefix = common.spm_prefix(vocab_type, vocab_size, task)
    common.train_sentencepiece(
        texts, os.path.join(root, prefix), vocab_type, vocab_size, symbols, spm_threads
    )
    common.write_config_yaml(
        root,
        f"config_{task}.yaml",
        prefix + ".model",
        specaugment_policy="ld",
        prepend_tgt_lang_tag=task == "st",
        absolute=absolute_paths,
    )
    for lang in langs:
        for split in SPLITS:
            src = os.path.join(root, f"en-{lang}", f"{split}_{task}.tsv")
            if not os.path.isfile(src):
                continue
            rows = [
                dataclasses.replace(
                    r,
                    audio=r.audio if os.path.isabs(r.audio) else f"en-{lang}/{r.audio}",
                    src_lang="en",
                    tgt_lang="en" if task == "asr" else lang,
                )
                for r in read_manifest(src)
            ]
            write_manifest(os.path.join(root, f"{split}_{lang}_{task}.tsv"), rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", "-d", required=True, help="folder holding en-<xx>/")
    parser.add_argument("--task", required=True, choices=["asr", "st"])
    parser.add_argument("--langs", default=",".join(LANGUAGES), help="comma-separated")
    parser.add_argument("--vocab-type", default="unigram", choices=["bpe", "unigram", "char"])
    parser.add_argument("--vocab-size", default=8000, type=int)
    parser.add_argument("--joint", action="store_true", help="joint vocabulary and manifests")
    parser.add_argument("--cmvn-type", default="utterance", choices=["utterance", "global"])
    parser.add_argument("--gcmvn-max-num", default=150000, type=int)
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--spm-threads", type=int, default=1, help="sentencepiece threads (1: byte-identical)"
    )
    parser.add_argument("--absolute-paths", action="store_true", help="as fairseq writes them")
    parser.add_argument("--keep-features", action="store_true", help="keep fbank80/ .npy files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    langs = [lang for lang in args.langs.split(",") if lang]
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown:
        parser.error(f"--langs {unknown}: MuST-C has {list(LANGUAGES)}")
    if args.joint:
        prepare_joint(
            args.data_root,
            args.task,
            langs,
            args.vocab_type,
            args.vocab_size,
            args.spm_threads,
            args.absolute_paths,
        )
        return
    done = 0
    for lang in langs:
        if not os.path.isdir(os.path.join(args.data_root, f"en-{lang}")):
            print(f"{args.data_root}/en-{lang} does not exist: skipped")
            continue
        prepare_language(
            args.data_root,
            lang,
            args.task,
            args.vocab_type,
            args.vocab_size,
            args.cmvn_type,
            args.gcmvn_max_num,
            args.num_workers,
            args.spm_threads,
            args.absolute_paths,
            args.keep_features,
        )
        done += 1
    if not done:
        raise SystemExit(f"{args.data_root}: no en-<xx> folder for {langs}")
