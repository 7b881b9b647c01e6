"""Validation's decoding metrics: WER, corpus BLEU, and forcing each utterance's language tag."""

import numpy as np
import pytest
import sacrebleu

from s2t_jax.training import validation

WORDS = ["<pad>", "</s>", "<lang:de>", "<lang:fr>", "the", "cat", "sat", "on", "a", "mat", "dog"]
PAD, EOS, DE, FR = 0, 1, 2, 3


class WordEncoder:
    """decode(ids) -> words up to eos, without pads or a leading language tag."""

    def decode(self, ids):
        out = []
        for i in np.asarray(ids).tolist():
            if i == EOS:
                break
            if i != PAD:
                out.append(WORDS[i])
        if out and out[0].startswith("<lang:"):
            out = out[1:]
        return " ".join(out)


class ListLoader:
    def __init__(self, batches):
        self.batches, self.plan = batches, list(range(len(batches)))

    def set_state(self, state):
        pass

    def close(self):
        pass

    def __iter__(self):
        return iter(self.batches)


def _ids(*words):
    return [WORDS.index(w) for w in words]


def _batch(targets, index):
    length = max(len(t) for t in targets) + 1
    target = np.full((len(targets), length), PAD, np.int32)
    for row, t in enumerate(targets):
        target[row, : len(t) + 1] = t + [EOS]
    return {
        "features": np.zeros((len(targets), 4, 2), np.float32),
        "attention_mask": np.ones((len(targets), 4), np.int32),
        "prev_tokens": target,
        "target": target,
        "index": np.asarray(index),
    }


def _run(metric, force_prefix, hyps_by_row):
    batches = [
        _batch([[DE, *_ids("the", "cat", "sat")], [FR, *_ids("a", "dog")]], [0, 1]),
        _batch([[DE, *_ids("the", "mat")], [PAD]], [2, -1]),  # the second row is padding
    ]
    forced_seen = []

    def generate_fn(params, features, mask, forced_bos_token_ids=None):
        forced_seen.append(None if forced_bos_token_ids is None else list(forced_bos_token_ids))
        rows = hyps_by_row[len(forced_seen) - 1]
        ids = np.full((len(rows), 8), PAD, np.int32)
        for r, h in enumerate(rows):
            ids[r, : len(h) + 2] = [EOS, *h, EOS]  # start token, tokens, eos
        return ids, None

    def eval_fn(params, batch):
        return {"loss": 1.0, "nll_loss": 1.0, "ntokens": 1.0, "n_correct": 1.0, "n_total": 1.0}

    out = validation.evaluate(
        ListLoader(batches),
        put=lambda b: b,
        eval_fn=eval_fn,
        params={"model": None},
        generate_fn=generate_fn,
        encoder=WordEncoder(),
        metric=metric,
        force_prefix=force_prefix,
    )
    return out, forced_seen


HYPS = [
    [[DE, *_ids("the", "cat", "sat", "on")], [FR, *_ids("a", "dog")]],
    [[DE, *_ids("the", "cat")], [FR]],
]


def test_bleu_matches_sacrebleu_and_language_tags_are_forced():
    out, forced = _run("bleu", True, HYPS)
    refs = ["the cat sat", "a dog", "the mat"]
    hyps = ["the cat sat on", "a dog", "the cat"]
    assert out["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert "wer" not in out
    assert forced == [[DE, FR], [DE, PAD]]  # each row's own tag; padding rows are skipped


def test_wer_counts_word_edits_and_nothing_is_forced_by_default():
    out, forced = _run("wer", False, HYPS)
    assert out["wer"] == pytest.approx(100.0 * (1 + 0 + 1) / 7)  # one insertion, one sub
    assert out["wer_words"] == 7
    assert forced == [None, None]


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="bleu"):
        _run("cer", False, HYPS)
