"""Batch evaluation of a checkpoint on a manifest: hypotheses, WER / BLEU / chrF, resumable.

`evaluate(checkpoint, manifest, output_dir, ...)` is what eval.py runs. It decodes every
utterance once with the jitted search of `generation.make_generate_fn`, sharded over all devices
of all processes, and writes two files (process 0 only):

  hypotheses.tsv  id, reference, hypothesis, errors, ref_words, seconds: one row per scored
                  utterance, appended (flushed and fsynced) as each batch finishes, rewritten in
                  manifest order at the end;
  results.json    metrics, counts, audio hours, skipped utterances with their reasons, timings
                  (compile time apart from decode time, real-time factor).

Why each piece:
  * Batches are cut from the utterances sorted by length and padded up to `buckets`, so the
    number of compilations is bounded by the buckets used, whatever the lengths.
  * Every batch is global: its rows are sharded over a ("data",) mesh of all devices, params are
    replicated, and each process loads only its devices' rows. The last batch is filled with
    dummy rows that are dropped, so each utterance is counted exactly once.
  * A file that cannot be read is reported in results.json and skipped; the run goes on.
  * Resume: rerunning with the same output_dir reads the ids already in hypotheses.tsv (a torn
    last line is cut off) and decodes only the others; metrics are computed over all rows. A
    run.json fingerprint (checkpoint, manifest hash, generation settings, tokenizer source)
    refuses to mix rows of different settings.

Where tokenizer and feature settings come from (the first that applies):
  1. `data_config`, a fairseq config.yaml, when given;
  2. the checkpoint's own files: transformers-style processor files in a model directory, or the
     data config recorded in a training workdir's train_config.json;
  3. the config.yaml beside the manifest (fairseq's layout; what a fairseq .pt needs).
Relative audio paths are joined to the audio_root of the explicit or beside-the-manifest data
config, else to the manifest's directory.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from s2t_jax.checkpoints import orbax_io
from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.manifest import REQUIRED_COLUMNS, load_features_or_waveform, read_manifest
from s2t_jax.decoding.buckets import DEFAULT_BUCKETS, bucket_for
from s2t_jax.decoding.generation import resolve_settings
from s2t_jax.decoding.sharded import ShardedGenerator
from s2t_jax.evaluation import metrics

log = logging.getLogger(__name__)

HYPOTHESES_FILE = "hypotheses.tsv"
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
HYP_COLUMNS = ("id", "reference", "hypothesis", "errors", "ref_words", "seconds")
HOP_SECONDS = 0.010  # one fbank frame every 10 ms
REASON_BYTES = 240  # skip reasons travel between processes as fixed-width utf-8
_OK, _BAD, _DUMMY = 0, 1, 2  # row status within a batch
_TSV = dict(delimiter="\t", quotechar=None, doublequote=False, quoting=csv.QUOTE_NONE)


# --------------------------------------------------------------------------------------------
# The checkpoint
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LoadedCheckpoint:
    model: object  # Speech2TextForConditionalGeneration
    kind: str  # "model_dir", "fairseq" or "training"
    step: int | None = None  # training checkpoints only
    workdir: str | None = None  # training checkpoints only


def _training_workdir(path: str) -> tuple[str, int | None] | None:
    """(workdir, step) when `path` is a training workdir or one of its `checkpoints/<step>`."""
    if os.path.isfile(os.path.join(path, orbax_io.MODEL_CONFIG_FILE)) and os.path.isdir(
        os.path.join(path, orbax_io.CHECKPOINT_DIR)
    ):
        return path, None
    parent, step = os.path.split(os.path.normpath(path))
    workdir, name = os.path.split(parent)
    if step.isdigit() and name == orbax_io.CHECKPOINT_DIR:
        if os.path.isfile(os.path.join(workdir, orbax_io.MODEL_CONFIG_FILE)):
            return workdir, int(step)
    return None


def load_checkpoint(path: str | os.PathLike, dtype: str | None = None) -> LoadedCheckpoint:
    """A model dir (ours or transformers'), a fairseq .pt, or a training workdir / checkpoint."""
    from s2t_jax.modeling import Speech2TextForConditionalGeneration

    path = os.path.abspath(os.fspath(path))
    training = _training_workdir(path) if os.path.isdir(path) else None
    if training is not None:
        workdir, step = training
        config, params, step = orbax_io.load_train_checkpoint(workdir, step)
        if dtype is not None:
            config = config.replace(dtype=np.dtype(dtype).name)
        model = Speech2TextForConditionalGeneration(config, params)
        return LoadedCheckpoint(model, "training", step=step, workdir=workdir)
    model = Speech2TextForConditionalGeneration.from_pretrained(path, dtype=dtype)
    return LoadedCheckpoint(model, "model_dir" if os.path.isdir(path) else "fairseq")


# --------------------------------------------------------------------------------------------
# Features and text: the front end
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Frontend:
    """Audio path -> normalised features, and generated ids -> text, as the model expects."""

    source: str  # where the settings came from, for results.json and the resume fingerprint
    audio_root: str
    sampling_rate: int
    num_mel_bins: int
    normalise: Callable[[np.ndarray], np.ndarray]  # raw fbank [frames, mels] -> CMVN'd
    decode_ids: Callable[[np.ndarray], str]  # ids after the decoder start token -> text
    lang_id: Callable[[str], int] | None = None  # <lang:xx> token id; None: no language tags

    def load(self, audio: str) -> tuple[np.ndarray, float]:
        """-> (features float32 [frames, mels], seconds of audio). Raises OSError/ValueError."""
        from s2t_jax.frontend.features import kaldi_fbank

        kind, x = load_features_or_waveform(audio, self.audio_root, self.sampling_rate)
        if kind == "waveform":
            seconds = len(x) / self.sampling_rate
            x = kaldi_fbank([x], self.sampling_rate, self.num_mel_bins)[0]
        else:
            seconds = len(x) * HOP_SECONDS
        if x.shape[0] == 0:
            raise ValueError(f"{audio}: shorter than one 25 ms frame")
        if x.shape[1] != self.num_mel_bins:
            raise ValueError(f"{audio}: {x.shape[1]} feature bins, expected {self.num_mel_bins}")
        return self.normalise(x), seconds

    def decode(self, ids: np.ndarray) -> str:
        """Generated ids [max_length] (decoder start token first) -> text, one line."""
        return " ".join(self.decode_ids(np.asarray(ids)[1:]).split())


def processor_frontend(model_dir: str, audio_root: str) -> Frontend:
    """Tokenizer and feature extractor saved with a model (transformers' files)."""
    from s2t_jax.frontend.processor import Speech2TextProcessor

    processor = Speech2TextProcessor.from_pretrained(model_dir)
    extractor, tokenizer = processor.feature_extractor, processor.tokenizer
    codes = getattr(tokenizer, "lang_code_to_id", None) or {}
    return Frontend(
        source=f"processor files in {model_dir}",
        audio_root=audio_root,
        sampling_rate=extractor.sampling_rate,
        num_mel_bins=extractor.num_mel_bins,
        # The extractor's own CMVN (global or utterance), the one it applies to waveforms.
        normalise=extractor._normalise,
        decode_ids=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        lang_id=codes.__getitem__ if codes else None,
    )


def data_config_frontend(yaml_path: str, split: str, audio_root: str) -> Frontend:
    """fairseq's data config: spm + dictionary, and the split's eval-time CMVN (as training's
    validation applies it, so eval scores match what training saw)."""
    from s2t_jax.frontend.features import load_global_cmvn, utterance_cmvn

    data = _load_data_config(yaml_path)
    steps = data.cmvn(split, is_train=False)
    stats = {
        s["stats_npz_path"]: load_global_cmvn(s["stats_npz_path"])
        for s in steps
        if s["kind"] == "global"
    }

    def normalise(x):  # [frames, mels] -> [frames, mels]
        for step in steps:
            if step["kind"] == "utterance":
                x = utterance_cmvn(x, None, step["norm_means"], step["norm_vars"])
            else:
                s = stats[step["stats_npz_path"]]
                x = ((x - s["mean"]) / s["std"]).astype(np.float32)
        return x

    encoder = data.target_encoder()
    index = encoder.dictionary.index

    def lang_id(lang: str) -> int:
        tag = f"<lang:{lang}>"
        if tag not in index:
            raise KeyError(f"language tag {tag} is not in {encoder.dict_path}")
        return index[tag]

    return Frontend(
        source=f"data config {os.path.abspath(yaml_path)} (split {split})",
        audio_root=audio_root,
        sampling_rate=data.sampling_rate,
        num_mel_bins=data.input_feat_per_channel * data.input_channels,
        normalise=normalise,
        decode_ids=encoder.decode,
        lang_id=lang_id if data.prepend_tgt_lang_tag else None,
    )


def _has_processor_files(directory: str | None) -> bool:
    if not directory or not os.path.isdir(directory):
        return False
    names = set(os.listdir(directory))
    has_extractor = bool({"preprocessor_config.json", "processor_config.json"} & names)
    return has_extractor and {"vocab.json", "sentencepiece.bpe.model"} <= names


def _load_data_config(path: str) -> DataConfig:
    path = os.path.abspath(path)
    return DataConfig.load(os.path.dirname(path), os.path.basename(path))


def _workdir_data_config(workdir: str) -> str | None:
    """The data config a training run recorded (train_config.json's data.root/config_yaml)."""
    try:
        with open(os.path.join(workdir, "train_config.json")) as f:
            data = json.load(f).get("data", {})
    except (OSError, ValueError):
        return None
    if not data.get("root"):
        return None
    path = os.path.join(data["root"], data.get("config_yaml") or "config.yaml")
    return path if os.path.isfile(path) else None


def data_config_path(train_config) -> str:
    """The data config named by a training config (ml_collections): data.root/config_yaml."""
    return os.path.join(train_config.data.root, train_config.data.config_yaml)


def choose_frontend(
    loaded: LoadedCheckpoint, manifest: str, data_config: str | None = None
) -> Frontend:
    """Picks tokenizer + feature settings; see the module docstring for the order."""
    manifest = os.path.abspath(manifest)
    split = os.path.splitext(os.path.basename(manifest))[0]
    beside = os.path.join(os.path.dirname(manifest), "config.yaml")
    local = data_config or (beside if os.path.isfile(beside) else None)
    audio_root = _load_data_config(local).audio_root if local else os.path.dirname(manifest)
    if data_config:
        return data_config_frontend(data_config, split, audio_root)
    model_dir = getattr(loaded.model, "source_dir", None)
    if _has_processor_files(model_dir):
        return processor_frontend(model_dir, audio_root)
    recorded = _workdir_data_config(loaded.workdir) if loaded.workdir else None
    if recorded:
        return data_config_frontend(recorded, split, audio_root)
    if local:
        return data_config_frontend(local, split, audio_root)
    raise FileNotFoundError(
        f"no tokenizer / feature settings for {manifest}: the checkpoint has no processor files "
        f"and there is no {beside}; pass data_config (a fairseq config.yaml)"
    )


# --------------------------------------------------------------------------------------------
# The manifest
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Item:
    id: str
    audio: str
    n_frames: int  # a sort key only: the TSV's column, or estimated from the file header
    reference: str | None  # None: no references (a plain list of audio paths)
    tgt_lang: str = ""


def _estimate_frames(path: str) -> int:
    """Frames from a file's header (sound) or array shape (.npy); 0 when unreadable (the error
    then surfaces, and is reported, when the file is loaded)."""
    try:
        if path.lower().endswith(".npy"):
            return int(np.load(path, mmap_mode="r").shape[0])
        import soundfile

        return int(soundfile.info(path).duration / HOP_SECONDS)
    except Exception:  # any failure only loses the sort key
        return 0


def read_items(path: str, audio_root: str) -> list[Item]:
    """A fairseq TSV (id, audio, n_frames, tgt_text, ...) or a plain list of audio paths.

    A TSV is recognised by a header holding `id` and `audio`; without `tgt_text` it gives
    hypotheses only, as does a plain list (whose ids are the paths as written).
    """
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
    if "id" in header and "audio" in header:
        if all(c in header for c in REQUIRED_COLUMNS):
            return [
                Item(u.id, u.audio, u.n_frames, u.tgt_text, u.tgt_lang) for u in read_manifest(path)
            ]
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, **_TSV))
        return [
            Item(r["id"], r["audio"], int(r.get("n_frames") or 0), None, r.get("tgt_lang") or "")
            for r in rows
        ]
    with open(path, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    return [
        Item(
            p,
            p,
            _estimate_frames(p if os.path.isabs(p) else os.path.join(audio_root, p)),
            None,
        )
        for p in paths
    ]


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Sharded generation
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# hypotheses.tsv and run.json
# --------------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    return " ".join(str(text).split())  # no tabs or newlines inside a TSV field


def read_hypotheses(path: str, repair: bool = False) -> list[dict]:
    """Rows of hypotheses.tsv. A torn last line (no newline: the run died mid-write) is ignored,
    and with `repair=True` cut from the file so that appended rows start on a fresh line."""
    if not os.path.isfile(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: dropping a torn last line (%d bytes)", path, len(data) - end)
        if repair:
            with open(path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
    lines = data[:end].decode("utf-8").split("\n")[:-1]
    if not lines:
        return []
    if tuple(lines[0].split("\t")) != HYP_COLUMNS:
        raise ValueError(f"{path}: header is not {HYP_COLUMNS}; not a hypotheses file of ours")
    rows = {}
    for line in lines[1:]:
        fields = line.split("\t")
        if len(fields) == len(HYP_COLUMNS):
            rows[fields[0]] = dict(zip(HYP_COLUMNS, fields))
    return list(rows.values())


class HypothesisWriter:
    """Appends rows to hypotheses.tsv; each batch is flushed and fsynced, so a crash loses at
    most the batch being written (and leaves at most one torn line)."""

    def __init__(self, path: str):
        new = not os.path.isfile(path) or os.path.getsize(path) == 0
        self.file = open(path, "a", encoding="utf-8", newline="")
        if new:
            self.file.write("\t".join(HYP_COLUMNS) + "\n")
            self._sync()

    def _sync(self):
        self.file.flush()
        os.fsync(self.file.fileno())

    def append(self, rows: Sequence[dict]) -> None:
        for row in rows:
            self.file.write("\t".join(_clean(row.get(c, "")) for c in HYP_COLUMNS) + "\n")
        self._sync()

    def close(self):
        self.file.close()


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _prepare_output(output_dir: str, fingerprint: dict, overwrite: bool) -> tuple[set, str]:
    """(ids already scored, error message or ""). Process 0 only."""
    os.makedirs(output_dir, exist_ok=True)
    hyp_path = os.path.join(output_dir, HYPOTHESES_FILE)
    run_path = os.path.join(output_dir, RUN_FILE)
    if overwrite:
        for name in (HYPOTHESES_FILE, RESULTS_FILE, RUN_FILE):
            if os.path.exists(os.path.join(output_dir, name)):
                os.remove(os.path.join(output_dir, name))
    rows = read_hypotheses(hyp_path, repair=True)
    saved = None
    if os.path.isfile(run_path):
        with open(run_path) as f:
            saved = json.load(f)
    if rows and saved != fingerprint:
        keys = sorted(k for k in fingerprint if (saved or {}).get(k) != fingerprint[k])
        return set(), (
            f"{output_dir} holds hypotheses of another run (differs in {keys or 'run.json'}); "
            "use another output_dir, or overwrite to start afresh"
        )
    _write_atomic(run_path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
    return {r["id"] for r in rows}, ""


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def score(
    references: Sequence[str],
    hypotheses: Sequence[str],
    normalizer: metrics.TextNormalizer,
    char_bleu: bool = False,
) -> dict:
    """WER (jiwer, on normalised text) and BLEU / chrF (sacrebleu, on detokenised text)."""
    if not references:
        return {}
    wer = metrics.word_error_rate(references, hypotheses, normalizer)
    out = {
        "wer": wer["wer"],
        "wer_errors": wer["errors"],
        "wer_ref_words": wer["ref_words"],
        "substitutions": wer["substitutions"],
        "deletions": wer["deletions"],
        "insertions": wer["insertions"],
        "bleu": metrics.bleu(references, hypotheses, char_level=char_bleu),
        "chrf": metrics.chrf(references, hypotheses),
    }
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def plan_batches(items: Sequence[Item], todo: Sequence[int], forced: dict, batch_size: int):
    """[(forced BOS, [item index or -1] * batch_size)]: longest first, one forced language per
    batch, the last batch of each language filled with -1 (dummy rows)."""
    order = sorted(todo, key=lambda i: (str(forced.get(i)), -items[i].n_frames, i))
    batches, current, key = [], [], object()
    for i in order:
        if forced.get(i) != key or len(current) == batch_size:
            if current:
                batches.append((key, current + [-1] * (batch_size - len(current))))
            current, key = [], forced.get(i)
        current.append(i)
    if current:
        batches.append((key, current + [-1] * (batch_size - len(current))))
    return batches


def _load_rows(frontend: Frontend, items, rows, max_frames: int):
    """This process's rows of a batch -> [(features or None, seconds, reason)]."""
    out = []
    for i in rows:
        if i < 0:
            out.append((None, 0.0, ""))
            continue
        try:
            x, seconds = frontend.load(items[i].audio)
        except (OSError, ValueError) as e:  # AudioError and ManifestError are ValueErrors
            out.append((None, 0.0, str(e) or type(e).__name__))
            continue
        if len(x) > max_frames:
            reason = f"too long for the encoder: {len(x)} frames > {max_frames}"
            out.append((None, seconds, reason))
            continue
        out.append((x, seconds, ""))
    return out


def _encode_reason(text: str) -> np.ndarray:
    raw = text.encode("utf-8")[:REASON_BYTES]
    return np.frombuffer(raw.ljust(REASON_BYTES, b"\0"), np.uint8)


def _decode_reason(raw: np.ndarray) -> str:
    return bytes(raw).rstrip(b"\0").decode("utf-8", errors="replace")


def _gather(tree):
    """Per-process numpy arrays (rows first) -> the global rows, on every process."""
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def evaluate(
    checkpoint: str,
    manifest: str,
    output_dir: str,
    *,
    data_config: str | None = None,
    num_beams: int | None = None,
    max_length: int | None = None,
    batch_size: int = 16,
    buckets: Sequence[int] | None = DEFAULT_BUCKETS,
    task: str = "asr",
    wer_tokenizer: str = "none",
    wer_lowercase: bool = False,
    wer_remove_punctuation: bool = False,
    wer_char_level: bool = False,
    char_bleu: bool = False,
    tgt_lang: str | None = None,
    num_devices: int = 0,
    dtype: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Decodes `manifest` with `checkpoint` and scores it; returns results.json's content
    (on process 0; other processes return {}).

    batch_size is global (utterances per step over all devices; rounded up to a multiple of the
    device count). num_beams / max_length default to the checkpoint's generation settings.
    WER, BLEU and chrF are all computed when there are references; `task` ("asr" or "st")
    names the headline metric (WER or BLEU). `num_devices` (0: all) limits the mesh.
    """
    if task not in ("asr", "st"):
        raise ValueError(f"task={task!r}: expected 'asr' or 'st'")
    started = time.perf_counter()
    manifest, output_dir = os.path.abspath(manifest), os.path.abspath(output_dir)
    normalizer = metrics.TextNormalizer(
        wer_tokenizer, wer_lowercase, wer_remove_punctuation, wer_char_level
    )
    loaded = load_checkpoint(checkpoint, dtype)
    config = loaded.model.config
    frontend = choose_frontend(loaded, manifest, data_config)
    expected = config.input_feat_per_channel * config.input_channels
    if frontend.num_mel_bins != expected:
        raise ValueError(
            f"{frontend.source}: {frontend.num_mel_bins} features per frame, the model takes "
            f"{expected}"
        )
    settings = resolve_settings(loaded.model, num_beams=num_beams, max_length=max_length)
    settings = dataclasses.replace(settings, num_return_sequences=1, forced_bos_token_id=None)
    items = read_items(manifest, frontend.audio_root)
    fingerprint = {
        "checkpoint": os.path.abspath(checkpoint),
        "step": loaded.step,
        "manifest": manifest,
        "manifest_sha256": _file_sha256(manifest),
        "frontend": frontend.source,
        "generation": dataclasses.asdict(settings),
        "tgt_lang": tgt_lang,
        "dtype": config.dtype,
    }
    run = Run(items, frontend, normalizer, output_dir, started)
    run.plan(fingerprint, overwrite, tgt_lang)
    run.load_seconds = time.perf_counter() - started
    if run.todo:
        generator = ShardedGenerator(loaded.model, settings, num_devices)
        max_frames = config.max_source_positions * 2**config.num_conv_layers
        run.decode(generator, batch_size, buckets, max_frames, progress)
    if jax.process_index() != 0:
        return {}
    body = run.results(char_bleu)
    results = {
        "checkpoint": fingerprint["checkpoint"],
        "checkpoint_kind": loaded.kind,
        "step": loaded.step,
        "manifest": manifest,
        "task": task,
        "primary_metric": ("wer" if task == "asr" else "bleu") if body["metrics"] else None,
        **body,
        "generation": fingerprint["generation"],
    }
    _write_atomic(
        os.path.join(output_dir, RESULTS_FILE),
        json.dumps(results, indent=2, ensure_ascii=False) + "\n",
    )
    return results


class Run:
    """One evaluation's state: what to decode, what was skipped and why, counts and timings."""

    def __init__(self, items, frontend, normalizer, output_dir: str, started: float):
        self.items, self.frontend, self.normalizer = items, frontend, normalizer
        self.output_dir, self.started = output_dir, started
        self.has_refs = bool(items) and items[0].reference is not None
        self.hyp_path = os.path.join(output_dir, HYPOTHESES_FILE)
        self.is_main = jax.process_index() == 0
        self.skipped: dict[str, str] = {}  # id -> reason
        self.first: dict[str, int] = {}  # id -> index of its first row in the manifest
        self.todo: list[int] = []
        self.forced: dict[int, int | None] = {}  # item -> forced language token
        self.decoded, self.decoded_seconds = 0, 0.0
        self.load_seconds = self.loop_seconds = 0.0
        self.generator: ShardedGenerator | None = None
        self.batch_size = 0

    def plan(self, fingerprint: dict, overwrite: bool, tgt_lang: str | None) -> None:
        """First row of each id, minus the ids a previous run scored (process 0 reads them and
        tells the others), each with its forced target-language token."""
        for i, item in enumerate(self.items):
            if item.id in self.first:
                self.skipped.setdefault(item.id, "duplicate id (its first row is used)")
            else:
                self.first[item.id] = i
        done, error = set(), ""
        if self.is_main:
            done, error = _prepare_output(self.output_dir, fingerprint, overwrite)
        ids = [self.items[i].id for i in self.first.values()]
        flags = np.asarray([bool(error)] + [i in done for i in ids], np.int32)
        if jax.process_count() > 1:
            flags = np.asarray(multihost_utils.broadcast_one_to_all(flags))
        if flags[0]:
            raise ValueError(error or "process 0 refused the output directory (see its log)")
        lang_id = self.frontend.lang_id
        if tgt_lang is not None and lang_id is None:
            raise ValueError(f"tgt_lang={tgt_lang!r}, but {self.frontend.source} has no tags")
        for i, already in zip(self.first.values(), flags[1:]):
            if already:
                continue
            lang = tgt_lang if tgt_lang is not None else self.items[i].tgt_lang
            try:
                self.forced[i] = int(lang_id(lang)) if lang_id and lang else None
            except KeyError as e:
                self.skipped[self.items[i].id] = f"unknown target language: {e}"
                continue
            self.todo.append(i)

    def decode(self, generator: ShardedGenerator, batch_size, buckets, max_frames, progress):
        """Every planned utterance through the sharded search, batch by batch; process 0
        appends each batch's rows to hypotheses.tsv as soon as it is decoded."""
        self.generator = generator
        self.batch_size = generator.round_batch(batch_size)
        local = generator.local_rows(self.batch_size)
        batches = plan_batches(self.items, self.todo, self.forced, self.batch_size)
        writer = HypothesisWriter(self.hyp_path) if self.is_main else None
        show = progress and self.is_main
        bar = tqdm(total=len(self.todo), unit="utt", desc="eval", disable=None if show else True)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)  # loads batch k+1 during k

        def load(k):
            rows = batches[k][1][local]
            return pool.submit(_load_rows, self.frontend, self.items, rows, max_frames)

        start = time.perf_counter()
        try:
            pending = load(0)
            for k, (bos, rows) in enumerate(batches):
                loaded_rows = pending.result()
                if k + 1 < len(batches):
                    pending = load(k + 1)
                ids, status, seconds, reasons = _decode_batch(
                    generator, loaded_rows, self.frontend.num_mel_bins, buckets, bos
                )
                out = self._collect(rows, ids, status, seconds, reasons)
                if writer is not None:
                    writer.append(out)
                bar.update(sum(1 for i in rows if i >= 0))
                bar.set_postfix(skipped=len(self.skipped), refresh=False)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
            if writer is not None:
                writer.close()
        self.loop_seconds = time.perf_counter() - start

    def _collect(self, rows, ids, status, seconds, reasons) -> list[dict]:
        """One decoded global batch -> hypothesis rows (process 0) and skip reasons (all)."""
        out = []
        for r, i in enumerate(rows):
            if status[r] == _DUMMY:
                continue
            item = self.items[i]
            if status[r] == _BAD:
                self.skipped[item.id] = _decode_reason(reasons[r])
                continue
            self.decoded += 1
            self.decoded_seconds += float(seconds[r])
            if self.is_main:
                row = {
                    "id": item.id,
                    "reference": _clean(item.reference or ""),
                    "hypothesis": self.frontend.decode(ids[r]),
                    "seconds": f"{float(seconds[r]):.3f}",
                }
                out.append(self._with_errors(row))
        return out

    def _with_errors(self, row: dict) -> dict:
        if not self.has_refs:
            return {**row, "errors": "", "ref_words": ""}
        norm = self.normalizer
        edits, words = metrics.utterance_errors(norm(row["reference"]), norm(row["hypothesis"]))
        return {**row, "errors": str(edits), "ref_words": str(words)}

    def results(self, char_bleu: bool) -> dict:
        """Scores every row, old and new; rewrites hypotheses.tsv in manifest order."""
        by_id = {r["id"]: r for r in read_hypotheses(self.hyp_path)}
        rows = [self._with_errors(by_id[k]) for k in self.first if k in by_id]
        lines = ["\t".join(HYP_COLUMNS)] + ["\t".join(r[c] for c in HYP_COLUMNS) for r in rows]
        _write_atomic(self.hyp_path, "\n".join(lines) + "\n")
        refs = [r["reference"] for r in rows] if self.has_refs else []
        hyps = [r["hypothesis"] for r in rows]
        order = {item.id: n for n, item in reversed(list(enumerate(self.items)))}
        gen = self.generator
        compile_seconds = gen.compile_seconds if gen else 0.0
        decode_seconds = max(self.loop_seconds - compile_seconds, 0.0)
        return {
            "output_dir": self.output_dir,
            "frontend": self.frontend.source,
            "metrics": score(refs, hyps, self.normalizer, char_bleu),
            "wer_normalizer": dataclasses.asdict(self.normalizer),
            "bleu_tokenize": "char" if char_bleu else "13a",
            "utterances": {
                "manifest": len(self.items),
                "scored": len(rows),
                "decoded_this_run": self.decoded,
                "resumed": len(rows) - self.decoded,
                "skipped": len(self.skipped),
            },
            "audio_hours": sum(float(r["seconds"]) for r in rows) / 3600.0,
            "skipped": [
                {"id": k, "reason": self.skipped[k]} for k in sorted(self.skipped, key=order.get)
            ],
            "timing": {
                "wall_time_s": time.perf_counter() - self.started,
                "load_time_s": self.load_seconds,
                "compile_time_s": compile_seconds,
                "decode_time_s": decode_seconds,
                "decoded_audio_s": self.decoded_seconds,
                "real_time_factor": (
                    decode_seconds / self.decoded_seconds if self.decoded_seconds else None
                ),
                "utterances_per_s": self.decoded / decode_seconds if decode_seconds else None,
            },
            "compiled_shapes": [list(s) for s in gen.shapes] if gen else [],
            "devices": {
                "count": gen.num_devices if gen else 0,
                "processes": jax.process_count(),
                "kind": jax.devices()[0].device_kind,
            },
            "batch_size": self.batch_size or None,
        }


def _decode_batch(generator: ShardedGenerator, loaded_rows, num_mel_bins: int, buckets, bos):
    """This process's loaded rows -> (ids, status, seconds, reasons) of the whole global batch.

    Every process pads to the same bucket: the largest over processes (one small all-gather),
    so the global batch has one shape. Bad and dummy rows carry one zero frame, which keeps
    their (discarded) attention finite.
    """
    longest = max((len(x) for x, _, _ in loaded_rows if x is not None), default=1)
    longest = int(_gather(np.asarray([longest], np.int64)).max())
    frames = bucket_for(longest, buckets)
    n = len(loaded_rows)
    features = np.zeros((n, frames, num_mel_bins), np.float32)  # [local rows, frames, F]
    mask = np.zeros((n, frames), np.int32)  # [local rows, frames]
    status = np.full((n,), _OK, np.int32)
    seconds = np.zeros((n,), np.float64)
    reasons = np.zeros((n, REASON_BYTES), np.uint8)
    for r, (x, secs, reason) in enumerate(loaded_rows):
        seconds[r] = secs
        if x is None:
            status[r] = _BAD if reason else _DUMMY
            reasons[r] = _encode_reason(reason)
            mask[r, 0] = 1
            continue
        features[r, : len(x)] = x
        mask[r, : len(x)] = 1
    ids = generator(features, mask, bos)  # [global rows, max_length]
    status, seconds, reasons = _gather((status, seconds, reasons))
    return ids, status, seconds, reasons


def summary_line(results: dict) -> str:
    """One line for the terminal: metrics, counts, speed, where the files are."""
    m = results["metrics"]
    parts = []
    if m:
        parts.append(f"WER {m['wer']:.2f}" if m["wer"] is not None else "WER n/a")
        parts += [f"BLEU {m['bleu']:.2f}", f"chrF {m['chrf']:.2f}"]
    u, t = results["utterances"], results["timing"]
    parts.append(f"{u['scored']} scored ({u['resumed']} resumed), {u['skipped']} skipped")
    parts.append(f"{results['audio_hours']:.3f} h of audio")
    if t["real_time_factor"] is not None:
        parts.append(f"RTF {t['real_time_factor']:.4f} (+{t['compile_time_s']:.1f} s compile)")
    return " | ".join(parts) + f" -> {os.path.join(results['output_dir'], RESULTS_FILE)}"
