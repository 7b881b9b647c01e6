"""What the speech-translation prep recipes (MuST-C, CoVoST 2) share, as fairseq's data_utils.py.

Each recipe cuts its corpus into work units (a MuST-C talk, a chunk of CoVoST clips); a unit
writes one `.npy` of 80-dim Kaldi fbank per utterance and then, last, a small JSON saying what
it wrote (frames per id, and every id it could not read, with the reason). Every file is
written under a temporary name and renamed, so a killed prep leaves only whole files, and a unit
whose JSON is present (for the same ids) is skipped when the prep is started again. Once all
units are done, the `.npy` files are packed into `fbank80.zip` in manifest order with fixed
timestamps, so the same input gives the same bytes.

Idea shared with s2t_jax/data/prep/librispeech.py (its sentencepiece training and config
writing, here with fairseq's user-defined symbols, a fixed seed and a choice of CMVN).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import multiprocessing
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import yaml
from tqdm import tqdm

from s2t_jax.data.manifest import Utterance, write_manifest, zip_manifest
from s2t_jax.data.vocab import BOS, EOS, PAD, SPECIALS, UNK

NUM_MEL_BINS = 80
SAMPLING_RATE = 16000
MIN_FRAMES, MAX_FRAMES = 5, 3000  # fairseq's filter_manifest_df
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: byte-identical zips
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# ------------------------------------------------------------------------------ atomic files


def atomic_write(path: str, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the umask's usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_zip(zip_path: str, members: Iterable[tuple[str, bytes | str]]) -> None:
    """An uncompressed zip of (name, bytes or file path), in the given order, with fixed
    timestamps and permissions, written atomically."""
    tmp = zip_path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for name, data in members:
            if isinstance(data, str):
                with open(data, "rb") as f:
                    data = f.read()
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    os.replace(tmp, zip_path)


def zip_locations(zip_path: str, out_root: str, absolute: bool = False) -> dict[str, tuple]:
    """member stem -> (manifest audio entry, frames); paths relative to `out_root` unless
    `absolute` (fairseq writes absolute ones)."""
    out = {}
    for uid, (ptr, frames) in zip_manifest(zip_path).items():
        path, offset, length = ptr.rsplit(":", 2)
        path = os.path.abspath(path) if absolute else os.path.relpath(path, out_root)
        out[uid] = (f"{path}:{offset}:{length}", frames)
    return out


# ------------------------------------------------------------------------------ work units


@dataclasses.dataclass(frozen=True)
class Unit:
    """One resumable piece of feature extraction: `items` are (utt_id, source) pairs whose
    meaning the recipe's worker knows; `key` names the unit's JSON in `<feature_dir>/.done`."""

    key: str
    feature_dir: str
    items: tuple


def done_path(unit: Unit) -> str:
    return os.path.join(unit.feature_dir, ".done", unit.key + ".json")


def fingerprint(unit: Unit) -> str:
    """A digest of the unit's ids and sources (file names without their folders, so a moved
    data root keeps its finished units): a unit whose input changed is redone."""
    items = [
        [uid, [os.path.basename(x) if isinstance(x, str) else x for x in source]]
        for uid, source in unit.items
    ]
    return hashlib.sha1(json.dumps(items).encode()).hexdigest()


def finished(unit: Unit) -> dict | None:
    """The unit's recorded result when it is complete for the same input, else None."""
    try:
        with open(done_path(unit), encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    if result.get("fingerprint") != fingerprint(unit):
        return None
    if not all(
        os.path.exists(os.path.join(unit.feature_dir, f"{u}.npy")) for u in result["frames"]
    ):
        return None
    return result


def save_unit(
    unit: Unit,
    features: dict[str, np.ndarray],
    bad: dict[str, str],
    seconds: dict[str, float] | None = None,
) -> dict:
    """Writes each utterance's .npy, then the unit's JSON (last: it marks the unit done):
    frames per id, the bad ids with their reasons, and each id's audio duration if given."""
    frames = {}
    for uid, _ in unit.items:
        if uid in features:
            feats = features[uid].astype(np.float32)
            atomic_write(os.path.join(unit.feature_dir, f"{uid}.npy"), npy_bytes(feats))
            frames[uid] = int(feats.shape[0])
    result = {"fingerprint": fingerprint(unit), "frames": frames, "bad": bad}
    if seconds is not None:
        result["seconds"] = {uid: seconds[uid] for uid in frames}
    os.makedirs(os.path.dirname(done_path(unit)), exist_ok=True)
    atomic_write(done_path(unit), json.dumps(result, sort_keys=True).encode())
    return result


def _one_fbank_thread() -> None:
    """In a pool worker: fbank on one thread (the pool already uses the cores). Runs before
    the worker imports s2t_jax.frontend.fbank, which reads the variable."""
    os.environ.setdefault("S2T_FBANK_THREADS", "1")


def run_units(
    worker: Callable[[Unit], dict], units: Sequence[Unit], num_workers: int, desc: str
) -> dict[str, dict]:
    """Runs `worker` on every unfinished unit (in a spawn pool when num_workers > 1);
    -> {unit key: result}. Finished units are read back, not redone."""
    results, todo = {}, []
    for folder in {unit.feature_dir for unit in units}:
        os.makedirs(os.path.join(folder, ".done"), exist_ok=True)
    for unit in units:
        done = finished(unit)
        if done is None:
            todo.append(unit)
        else:
            results[unit.key] = done
    bar = tqdm(total=len(units), initial=len(units) - len(todo), desc=desc, unit="unit")
    if num_workers > 1 and len(todo) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(num_workers, len(todo)), initializer=_one_fbank_thread) as pool:
            for unit, result in zip(todo, pool.imap(worker, todo)):
                results[unit.key] = result
                bar.update()
    else:
        for unit in todo:
            results[unit.key] = worker(unit)
            bar.update()
    bar.close()
    return results


def fbank(waveform: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """80-dim Kaldi fbank of a [-1, 1] waveform; the kernel applies Kaldi's int16 scale, as
    fairseq's extract_fbank_features does before calling Kaldi."""
    from s2t_jax.frontend.fbank import kaldi_fbank

    return kaldi_fbank([waveform], sampling_rate, NUM_MEL_BINS)[0]


# ------------------------------------------------------------------------------ manifests


def filter_rows(rows: list[Utterance], is_train: bool) -> tuple[list[Utterance], dict[str, list]]:
    """fairseq's filter_manifest_df: drops no audio, < 5 frames, empty text and (train only)
    > 3000 frames; -> (kept rows, {reason: [ids]})."""
    dropped = {"short speech": [], "empty sentence": [], "long speech": []}
    kept = []
    for r in rows:
        if r.n_frames < MIN_FRAMES:
            dropped["short speech"].append(r.id)
        elif r.tgt_text == "":
            dropped["empty sentence"].append(r.id)
        elif is_train and r.n_frames > MAX_FRAMES:
            dropped["long speech"].append(r.id)
        else:
            kept.append(r)
    return kept, dropped


def write_split_manifests(
    out_root: str,
    task: str,
    splits: Iterable[tuple[str, list[Utterance], dict[str, str]]],
    seconds: dict[str, float],
) -> tuple[dict, list[str]]:
    """The recipes' manifest loop. For each (split, rows, bad ids with reasons), in order:
    fairseq's length filter (train rows' text is taken for the vocabulary before it, as fairseq
    does), `<out_root>/<split>_<task>.tsv`, and the split's summary (utterances, hours from
    `seconds` per id, bad, filtered). -> ({split: summary}, the vocabulary's train text)."""
    summaries, train_text = {}, []
    for split, rows, bad in splits:
        if split == "train":
            train_text.extend(r.tgt_text for r in rows)
        kept, dropped = filter_rows(rows, is_train=split.startswith("train"))
        write_manifest(os.path.join(out_root, f"{split}_{task}.tsv"), kept)
        summaries[split] = {
            "utterances": len(kept),
            "hours": sum(seconds[r.id] for r in kept) / 3600,
            "bad": bad,
            "filtered": dropped,
        }
    return summaries, train_text


def finish_prep(
    out_root: str,
    task: str,
    summary: dict,
    train_text: list[str],
    vocab_type: str,
    vocab_size: int,
    spm_threads: int,
    feature_dir: str,
    keep_features: bool,
    **config_yaml,
) -> None:
    """What every recipe does after its manifests: the sentencepiece vocabulary on the train
    text, `config_<task>.yaml` (`config_yaml`: write_config_yaml's options), the summary, and
    the per-utterance features removed unless `keep_features`."""
    import shutil

    if not train_text:
        raise ValueError(
            f"{out_root}: no readable train utterance: the vocabulary is trained on train"
        )
    prefix = spm_prefix(vocab_type, vocab_size, task)
    train_sentencepiece(
        train_text, os.path.join(out_root, prefix), vocab_type, vocab_size, None, spm_threads
    )
    write_config_yaml(out_root, f"config_{task}.yaml", prefix + ".model", **config_yaml)
    write_summary(os.path.join(out_root, f"summary_{task}.json"), summary)
    if not keep_features:
        shutil.rmtree(feature_dir)


# ------------------------------------------------------------------------------ vocabulary


def train_sentencepiece(
    texts: list[str],
    prefix: str,
    vocab_type: str,
    vocab_size: int,
    special_symbols: Sequence[str] | None = None,
    num_threads: int = 1,
    hard_vocab_limit: bool = True,
) -> None:
    """fairseq's gen_vocab: spm with fairseq's special ids and flags (plus `special_symbols` as
    user-defined symbols), then `<prefix>.{model,vocab,txt}`, `.txt` being the fairseq
    dictionary. The text goes in through an iterator, not a temporary file, so the model does
    not record a path; with one thread and a fixed seed the bytes repeat run to run."""
    import sentencepiece as spm

    spm.set_random_generator_seed(1)
    extra = {"user_defined_symbols": ",".join(special_symbols)} if special_symbols else {}
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=buf,
        model_type=vocab_type,
        vocab_size=vocab_size,
        character_coverage=1.0,
        num_threads=num_threads,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        pad_id=PAD,
        hard_vocab_limit=hard_vocab_limit,
        minloglevel=2,
        **extra,
    )
    model = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    pieces = [model.id_to_piece(i) for i in range(model.get_piece_size())]
    if pieces[:4] != list(SPECIALS):
        raise RuntimeError(f"{prefix}.model: special pieces {pieces[:4]}, expected {SPECIALS}")
    atomic_write(prefix + ".model", buf.getvalue())
    vocab = "".join(f"{p}\t{model.get_score(i):g}\n" for i, p in enumerate(pieces))
    atomic_write(prefix + ".vocab", vocab.encode())
    dictionary = "".join(f"{p} 1\n" for p in pieces if p not in SPECIALS)
    atomic_write(prefix + ".txt", dictionary.encode())


def spm_prefix(vocab_type: str, vocab_size: int, task: str) -> str:
    return f"spm_{vocab_type}{'' if vocab_type == 'char' else vocab_size}_{task}"


# ------------------------------------------------------------------------------ data config


def gcmvn_stats(features: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """fairseq's cal_gcmvn_stats: mean and std (variance floored at 1e-8) over all frames."""
    x = np.concatenate(list(features)).astype(np.float64)  # [frames, mels]
    mean = x.mean(axis=0)
    var = (x**2).sum(axis=0) / x.shape[0] - mean**2
    return mean.astype(np.float32), np.sqrt(np.maximum(var, 1e-8)).astype(np.float32)


def write_gcmvn(path: str, mean: np.ndarray, std: np.ndarray) -> None:
    """gcmvn.npz (keys mean, std) as np.savez lays it out, with fixed timestamps."""
    write_zip(path, [("mean.npy", npy_bytes(mean)), ("std.npy", npy_bytes(std))])


def write_config_yaml(
    out_root: str,
    yaml_name: str,
    spm_name: str,
    specaugment_policy: str | None = "lb",
    cmvn_type: str = "utterance",
    gcmvn_path: str | None = None,
    prepend_tgt_lang_tag: bool = False,
    absolute: bool = False,
) -> None:
    """config_*.yaml with fairseq's gen_config_yaml keys (sorted, as its yaml.dump writes).

    File names are written relative to the data root (fairseq and DataConfig both resolve
    them there) unless `absolute`, as fairseq writes them."""
    from s2t_jax.frontend.specaugment import POLICIES

    def name(file: str) -> str:
        return os.path.abspath(os.path.join(out_root, file)) if absolute else file

    config = {
        "vocab_filename": spm_name.replace(".model", ".txt"),
        "input_channels": 1,
        "input_feat_per_channel": NUM_MEL_BINS,
        "bpe_tokenizer": {"bpe": "sentencepiece", "sentencepiece_model": name(spm_name)},
    }
    if specaugment_policy is not None:
        p = POLICIES[specaugment_policy]
        config["specaugment"] = {
            "time_wrap_W": p.time_warp_w,
            "freq_mask_N": p.freq_mask_n,
            "freq_mask_F": p.freq_mask_f,
            "time_mask_N": p.time_mask_n,
            "time_mask_T": p.time_mask_t,
            "time_mask_p": p.time_mask_p,
        }
    if prepend_tgt_lang_tag:
        config["prepend_tgt_lang_tag"] = True
    transforms = {"*": [f"{cmvn_type}_cmvn"]}
    if specaugment_policy is not None:
        transforms["_train"] = [f"{cmvn_type}_cmvn", "specaugment"]
    config["transforms"] = transforms
    if cmvn_type == "global":
        if gcmvn_path is None:
            raise ValueError("cmvn_type global needs the gcmvn.npz path")
        config["global_cmvn"] = {"stats_npz_path": name(gcmvn_path)}
    text = yaml.safe_dump(config, sort_keys=True, allow_unicode=True)
    atomic_write(os.path.join(out_root, yaml_name), text.encode())


# ------------------------------------------------------------------------------ summary


def write_summary(path: str, summary: dict) -> None:
    """Prints hours and counts per split and writes the whole summary as JSON."""
    for split, s in summary["splits"].items():
        dropped = sum(len(v) for v in s["filtered"].values())
        print(
            f"{split}: {s['utterances']} utterances, {s['hours']:.3f} h; "
            f"{len(s['bad'])} unreadable/empty, {dropped} filtered"
        )
        for uid, reason in s["bad"].items():
            print(f"  bad {uid}: {reason}")
    atomic_write(path, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
