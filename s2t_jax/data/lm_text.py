"""Text for the language model: sentences -> target ids -> fixed-shape batches.

The LM must share the speech model's vocabulary, so sentences go through the same target
encoder (the data config's sentencepiece model and fairseq dictionary) as the training
targets. Each sentence becomes `w1 ... wn </s>`; its input is `</s> w1 ... wn`, which is how
the speech decoder starts, so the LM scores the prefixes a search builds.

Batches have static shapes, as the speech loader's: a sentence goes to the smallest length
bucket that holds it, and each bucket's batch has `max_tokens // length` rows, padding rows
included, so there is one compile per bucket. The plan of an epoch is a seeded shuffle of
whole batches, so batch k of a run is the same after a resume.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from s2t_jax.data.vocab import EOS, PAD

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Sentences:
    ids: list[np.ndarray]  # each int32 [n + 1], ending in eos
    skipped: dict[str, int]


def read_sentences(paths, encoder, max_tokens_per_sentence: int) -> Sentences:
    """One sentence per line of each file. Empty lines are skipped; lines that are not UTF-8
    or longer than `max_tokens_per_sentence` tokens (eos included) are reported and skipped."""
    ids, skipped = [], {"empty": 0, "not_utf8": 0, "too_long": 0}
    for path in paths:
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8").strip()
                except UnicodeDecodeError as e:
                    log.warning("%s:%d: skipped, not UTF-8 (%s)", path, line_no, e)
                    skipped["not_utf8"] += 1
                    continue
                if not text:
                    skipped["empty"] += 1
                    continue
                tokens = encoder.encode(text)
                if len(tokens) > max_tokens_per_sentence:
                    skipped["too_long"] += 1
                    continue
                ids.append(tokens)
    if not ids:
        raise ValueError(f"{list(paths)}: no usable sentences (skipped {skipped})")
    return Sentences(ids, skipped)


def plan_batches(sentences: Sentences, buckets, max_tokens: int):
    """-> [(length, rows [batch] of sentence indices, -1 for padding rows)], unshuffled."""
    buckets = sorted(buckets)
    by_bucket: dict[int, list[int]] = {b: [] for b in buckets}
    for i, s in enumerate(sentences.ids):
        length = next((b for b in buckets if b >= len(s)), None)
        if length is None:
            raise ValueError(f"sentence {i} has {len(s)} tokens, above the largest bucket")
        by_bucket[length].append(i)
    batches = []
    for length, members in by_bucket.items():
        rows = max(1, max_tokens // length)
        for start in range(0, len(members), rows):
            chunk = members[start : start + rows]
            batches.append((length, np.asarray(chunk + [-1] * (rows - len(chunk)), np.int64)))
    return batches


def epoch_order(num_batches: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_batches)


def make_batch(sentences: Sentences, length: int, rows: np.ndarray) -> dict[str, np.ndarray]:
    """inputs / targets int32 [batch, length], pad-filled; padding rows are all pad."""
    inputs = np.full((len(rows), length), PAD, np.int32)
    targets = np.full((len(rows), length), PAD, np.int32)
    for r, i in enumerate(rows):
        if i < 0:
            continue
        s = sentences.ids[int(i)]
        targets[r, : len(s)] = s
        inputs[r, 0] = EOS
        inputs[r, 1 : len(s)] = s[:-1]
    return {"inputs": inputs, "targets": targets}
