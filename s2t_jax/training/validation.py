"""Validation during training: loss over the dev split, and greedy-decoding WER or BLEU.

WER here is a quick training signal (word edit distance on detokenised text, no normalisation);
for speech translation the signal is corpus BLEU (sacrebleu, 13a), as fairseq's
`--eval-bleu`. eval.py scores test sets with jiwer/sacrebleu. Decoding uses
decoding.search.make_generate_fn, one compile per bucket shape. When targets start with a
language tag (multilingual ST), each utterance's own tag is forced as the first generated token,
as fairseq's `--prefix-size 1` does, so the score measures translation, not language guessing.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import sacrebleu
from tqdm import tqdm

from s2t_jax.parallel.hosts import process_sum
from s2t_jax.training.train_state import DEVICE_KEYS


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
    metric: str = "wer",
    force_prefix: bool = False,
) -> dict:
    """One pass over `loader`: loss sums via `eval_fn(params, batch)`; WER via `generate_fn`.

    `put` moves a host batch onto the mesh. WER is computed on the first `max_wer_batches`
    batches (0: all) when `generate_fn` and `encoder` are given. With several processes each
    one scores the rows it loaded: `local_rows(ids)` takes them from the global output, and
    the error and word counts are summed over processes (`wer_words`: reference words scored).
    `metric="bleu"` scores corpus BLEU instead (sacrebleu's statistics summed over processes);
    `force_prefix` forces each row's first target token (its language tag) as the first
    generated token.
    """
    if metric not in ("wer", "bleu"):
        raise ValueError(f"validation metric must be 'wer' or 'bleu', got {metric!r}")
    loader.set_state({"consumed": 0, "plan": repr(loader.plan)})
    totals: dict[str, float] = {}
    errors = words = 0
    refs, hyps = [], []
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
            extra = {}
            if force_prefix:  # [batch] language tags; padding rows (all pad) force nothing
                extra["forced_bos_token_ids"] = batch["target"][:, 0]
            ids, _ = generate_fn(
                params["model"], batch["features"], batch["attention_mask"], **extra
            )
            ids = local_rows(ids) if local_rows is not None else np.asarray(jax.device_get(ids))
            for row, i in enumerate(host["index"]):
                if i < 0:
                    continue
                ref = encoder.decode(host["target"][row])
                hyp = encoder.decode(ids[row, 1:])  # drop the decoder start token
                refs.append(ref)
                hyps.append(hyp)
                errors += edit_distance(ref.split(), hyp.split())
                words += len(ref.split())
    for sums in jax.device_get(pending):
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    loader.close()
    out = summarize(totals)
    local = {"errors": errors, "words": words}
    if metric == "bleu":
        local.update(bleu_stats(refs, hyps))
    counts = process_sum(local)
    if counts["words"] and metric == "wer":
        out["wer"] = 100.0 * counts["errors"] / counts["words"]
        out["wer_words"] = counts["words"]
    if counts["words"] and metric == "bleu":
        out["bleu"] = sacrebleu.BLEU.compute_bleu(  # smoothing as corpus_bleu's default
            correct=[round(counts[f"bleu_correct_{n}"]) for n in range(4)],
            total=[round(counts[f"bleu_total_{n}"]) for n in range(4)],
            sys_len=round(counts["bleu_sys_len"]),
            ref_len=round(counts["bleu_ref_len"]),
            smooth_method="exp",
        ).score
    return out


def bleu_stats(refs: list[str], hyps: list[str]) -> dict:
    """sacrebleu's corpus statistics (13a), as a flat dict that can be summed over processes."""
    stats = {f"bleu_{k}_{n}": 0.0 for k in ("correct", "total") for n in range(4)}
    stats.update(bleu_sys_len=0.0, bleu_ref_len=0.0)
    if refs:
        score = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a")
        for n in range(4):
            stats[f"bleu_correct_{n}"] = float(score.counts[n])
            stats[f"bleu_total_{n}"] = float(score.totals[n])
        stats.update(bleu_sys_len=float(score.sys_len), bleu_ref_len=float(score.ref_len))
    return stats
