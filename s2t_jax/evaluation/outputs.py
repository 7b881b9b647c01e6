"""What a run leaves in its output directory, and how it survives being killed.

  hypotheses.tsv  id, reference, hypothesis, errors, ref_words, seconds: one row per scored
                  utterance, appended (flushed and fsynced) as each batch finishes, rewritten in
                  manifest order at the end;
  run.json        the run's fingerprint (checkpoint, manifest hash, generation settings,
                  tokenizer source): a rerun resumes only when it matches;
  results.json    metrics, counts, audio hours, skipped utterances with their reasons, timings.

Whole files are written to a temporary name and renamed, so a reader never sees half of one;
hypotheses.tsv is appended to instead, and a torn last line is cut off when it is read back.
Only process 0 touches these files.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

log = logging.getLogger(__name__)

HYPOTHESES_FILE = "hypotheses.tsv"
RESULTS_FILE = "results.json"
RUN_FILE = "run.json"
HYP_COLUMNS = ("id", "reference", "hypothesis", "errors", "ref_words", "seconds")


def clean(text: str) -> str:
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
            self.file.write("\t".join(clean(row.get(c, "")) for c in HYP_COLUMNS) + "\n")
        self._sync()

    def close(self):
        self.file.close()


def write_hypotheses(path: str, rows: Sequence[dict]) -> None:
    """Replaces hypotheses.tsv with `rows` (of already clean fields), in the order given."""
    lines = ["\t".join(HYP_COLUMNS)] + ["\t".join(r[c] for c in HYP_COLUMNS) for r in rows]
    write_atomic(path, "\n".join(lines) + "\n")


def write_results(output_dir: str, results: dict) -> None:
    write_atomic(
        os.path.join(output_dir, RESULTS_FILE),
        json.dumps(results, indent=2, ensure_ascii=False) + "\n",
    )


def write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_output(output_dir: str, fingerprint: dict, overwrite: bool) -> tuple[set, str]:
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
    write_atomic(run_path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
    return {r["id"] for r in rows}, ""


def summary_line(results: dict) -> str:
    """One line for the terminal: metrics, counts, speed, where the files are."""
    m = results["metrics"]
    parts = []
    if m:
        parts.append(f"WER {m['wer']:.2f}" if m["wer"] is not None else "WER n/a")
        parts += [f"BLEU {m['bleu']:.2f}", f"chrF {m['chrf']:.2f}"]
    u, t = results["utterances"], results["timing"]
    counts = f"{u['scored']} scored ({u['resumed']} resumed), {u['skipped']} skipped"
    if u.get("bad_rows"):
        counts += f", {u['bad_rows']} bad manifest rows"
    parts.append(counts)
    parts.append(f"{results['audio_hours']:.3f} h of audio")
    if t["real_time_factor"] is not None:
        parts.append(f"RTF {t['real_time_factor']:.4f} (+{t['compile_time_s']:.1f} s compile)")
    return " | ".join(parts) + f" -> {os.path.join(results['output_dir'], RESULTS_FILE)}"
