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

With --talks (no features, no vocabulary): talk-level manifests for `eval.py --long_form`,
`<split>_talks_<task>.tsv` in `en-<xx>/` (one row per talk: its wav, n_frames of the whole talk,
tgt_text = the talk's reference segments joined, speaker, tgt_lang), each with
`<split>_talks_<task>_segments.json` beside it: {talk: [{id, offset, duration, tgt_text}]}, the
reference segments in seconds, which long-form ST re-aligns its hypotheses to.

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
    splits_present = [s for s in SPLITS if os.path.isdir(os.path.join(out_root, "data", s))]
    if "train" not in splits_present:
        raise FileNotFoundError(f"{out_root}/data/train: the vocabulary is trained on train")
    talks = {s: read_segments(data_root, lang, s) for s in splits_present}
    feature_dir = os.path.join(out_root, "fbank80")
    units = [
        common.Unit(
            key=f"{split}-{i:05d}-{os.path.basename(talk[0].wav)}",
            feature_dir=feature_dir,
            items=tuple((s.id, (s.wav, s.offset, s.frames)) for s in talk),
        )
        for split in splits_present
        for i, talk in enumerate(talks[split])
    ]
    results = common.run_units(talk_features, units, num_workers, f"en-{lang} fbank")
    frames, bad = {}, {}
    for r in results.values():
        frames.update(r["frames"])
        bad.update(r["bad"])
    ordered = [seg for s in splits_present for talk in talks[s] for seg in talk if seg.id in frames]

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

    summary = {"corpus": "mustc", "lang": lang, "task": task}
    splits, seconds = [], {}
    for split in splits_present:
        segs = [seg for talk in talks[split] for seg in talk]
        seconds.update({seg.id: seg.frames / seg.sample_rate for seg in segs})
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
        splits.append((split, rows, {seg.id: bad[seg.id] for seg in segs if seg.id in bad}))
    summary["splits"], train_text = common.write_split_manifests(out_root, task, splits, seconds)
    common.finish_prep(
        out_root,
        task,
        summary,
        train_text,
        vocab_type,
        vocab_size,
        spm_threads,
        feature_dir,
        keep_features,
        specaugment_policy="lb",
        cmvn_type=cmvn_type,
        gcmvn_path=gcmvn_name,
        absolute=absolute_paths,
    )
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


def write_talk_manifests(
    data_root: str, lang: str, task: str, splits=("dev", "tst-COMMON", "tst-HE")
) -> list[str]:
    """Talk-level manifests (and their reference-segment sidecars) of `splits` that exist, for
    `eval.py --long_form`; -> the manifest paths. Audio paths are relative to `en-<lang>/`."""
    import json

    import soundfile

    from s2t_jax.frontend.fbank import HOP_SECONDS

    out_root = os.path.abspath(os.path.join(data_root, f"en-{lang}"))
    written = []
    for split in splits:
        if not os.path.isdir(os.path.join(out_root, "data", split)):
            continue
        rows, sidecar = [], {}
        for talk in read_segments(data_root, lang, split):
            wav = talk[0].wav
            name = os.path.splitext(os.path.basename(wav))[0]
            try:
                seconds = soundfile.info(wav).duration
            except (RuntimeError, OSError, soundfile.SoundFileError) as e:
                log.warning("%s: unreadable wav %s (%s): talk skipped", split, wav, e)
                continue
            texts = [seg.src_text if task == "asr" else seg.tgt_text for seg in talk]
            sidecar[name] = [
                {
                    "id": seg.id,
                    "offset": seg.offset / seg.sample_rate,
                    "duration": seg.frames / seg.sample_rate,
                    "tgt_text": text,
                }
                for seg, text in zip(talk, texts)
            ]
            rows.append(
                Utterance(
                    id=name,
                    audio=os.path.relpath(wav, out_root),
                    n_frames=int(seconds / HOP_SECONDS),
                    tgt_text=" ".join(" ".join(texts).split()),
                    speaker=talk[0].speaker,
                    src_lang="en",
                    tgt_lang="en" if task == "asr" else lang,
                )
            )
        path = os.path.join(out_root, f"{split}_talks_{task}.tsv")
        write_manifest(path, rows)
        with open(path[: -len(".tsv")] + "_segments.json", "w", encoding="utf-8") as f:
            json.dump(sidecar, f, ensure_ascii=False, indent=1)
            f.write("\n")
        written.append(path)
    return written


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
    parser.add_argument(
        "--talks",
        action="store_true",
        help="only write talk-level manifests of dev/tst-COMMON/tst-HE for eval.py --long_form",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    langs = [lang for lang in args.langs.split(",") if lang]
    unknown = [lang for lang in langs if lang not in LANGUAGES]
    if unknown:
        parser.error(f"--langs {unknown}: MuST-C has {list(LANGUAGES)}")
    if args.talks and args.joint:
        parser.error("--talks writes per-pair talk manifests: run it without --joint")
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
        if args.talks:
            for path in write_talk_manifests(args.data_root, lang, args.task):
                print(f"wrote {path}")
            done += 1
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
