"""Validation during training: loss over the dev split, and greedy-decoding WER.

WER here is a quick training signal (word edit distance on detokenised text, no normalisation);
eval.py scores test sets with jiwer/sacrebleu. Decoding uses generation.make_generate_fn, one
compile per bucket shape.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from tqdm import tqdm

from s2t_jax import sharding
from s2t_jax.train_state import DEVICE_KEYS


def edit_distance(ref: list, hyp: list) -> int:
    """Levenshtein distance between two token lists (substitutions, insertions, deletions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def summarize(sums: dict) -> dict:
    """Summed criterion -> fairseq's reported numbers (natural log; ppl = exp(nll))."""
    ntokens = max(sums["ntokens"], 1.0)
    out = {
        "loss": sums["loss"] / ntokens,
        "nll_loss": sums["nll_loss"] / ntokens,
        "ppl": math.exp(min(sums["nll_loss"] / ntokens, 50.0)),
        "accuracy": sums["n_correct"] / max(sums["n_total"], 1.0),
    }
    if "ctc_loss" in sums:
        out["ctc_loss"] = sums["ctc_loss"] / ntokens
    return out


def evaluate(
    loader,
    put,
    eval_fn,
    params,
    generate_fn=None,
    encoder=None,
    max_wer_batches: int = 0,
    desc: str = "valid",
    local_rows=None,
) -> dict:
    """One pass over `loader`: loss sums via `eval_fn(params, batch)`; WER via `generate_fn`.

    `put` moves a host batch onto the mesh. WER is computed on the first `max_wer_batches`
    batches (0: all) when `generate_fn` and `encoder` are given. With several processes each
    one scores the rows it loaded: `local_rows(ids)` takes them from the global output, and
    the error and word counts are summed over processes (`wer_words`: reference words scored).
    """
    loader.set_state({"consumed": 0, "plan": repr(loader.plan)})
    totals: dict[str, float] = {}
    errors = words = 0
    pending = []
    for n, host in enumerate(
        tqdm(loader, total=len(loader.plan), desc=desc, leave=False, disable=None)
    ):
        batch = put({k: host[k] for k in DEVICE_KEYS})
        pending.append(eval_fn(params, batch))
        if (
            generate_fn is not None
            and encoder is not None
            and (not max_wer_batches or n < max_wer_batches)
        ):
            ids, _ = generate_fn(params["model"], batch["features"], batch["attention_mask"])
            ids = local_rows(ids) if local_rows is not None else np.asarray(jax.device_get(ids))
            for row, i in enumerate(host["index"]):
                if i < 0:
                    continue
                ref = encoder.decode(host["target"][row]).split()
                hyp = encoder.decode(ids[row, 1:]).split()  # drop the decoder start token
                errors += edit_distance(ref, hyp)
                words += len(ref)
    for sums in jax.device_get(pending):
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    loader.close()
    out = summarize(totals)
    counts = sharding.process_sum({"errors": errors, "words": words})
    if counts["words"]:
        out["wer"] = 100.0 * counts["errors"] / counts["words"]
        out["wer_words"] = counts["words"]
    return out
