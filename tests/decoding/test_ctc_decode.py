"""CTC-only decoding modes: the CTC head's best path, and WeNet's attention rescoring of the
CTC N-best, each checked against an independent computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from s2t_jax.decoding import ctc
from s2t_jax.decoding.ctc_beam import ctc_prefix_beam_search
from s2t_jax.decoding.ctc_decode import attention_rescoring, ctc_greedy_generate
from tests.decoding.conftest import ctc_features as _features


def _log_probs(m, x, mask):
    enc, enc_mask = m.encode(x, mask)
    head = {k: jnp.asarray(v) for k, v in m.ctc_head.items()}
    return np.asarray(ctc.ctc_log_probs(enc, head)), np.asarray(enc_mask).sum(1)


def test_ctc_greedy_is_the_collapsed_best_path(ctc_model):
    model = ctc_model
    x, mask = _features()
    ids = ctc_greedy_generate(model, x, mask)
    log_probs, lengths = _log_probs(model, x, mask)
    cfg = model.config
    for row in range(2):
        best = np.argmax(log_probs[row, : lengths[row]], axis=-1).tolist()
        labels = [t for i, t in enumerate(best) if t != 0 and (i == 0 or t != best[i - 1])]
        got = ids[row, 1:].tolist()
        assert got[: len(labels) + 1] == labels + [cfg.eos_token_id]
        assert ids[row, 0] == cfg.decoder_start_token_id


@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_rescoring_picks_by_the_weighted_scores(ctc_model, weight):
    model = ctc_model
    x, mask = _features()
    ids = attention_rescoring(model, x, mask, beam_size=4, ctc_weight=weight)
    log_probs, lengths = _log_probs(model, x, mask)
    cfg = model.config
    for row in range(2):
        nbest = ctc_prefix_beam_search(log_probs[row, : lengths[row]], 4)
        got = [t for t in ids[row, 1:].tolist() if t not in (cfg.eos_token_id, cfg.pad_token_id)]
        if weight == 1.0:
            assert tuple(got) == nbest[0][0]
            continue

        # Attention alone: the candidate the decoder scores best, teacher-forced via __call__.
        scores = [_attention_score(model, x, mask, row, list(p)) for p, _ in nbest]
        assert tuple(got) == nbest[int(np.argmax(scores))][0]


def _attention_score(model, x, mask, row, labels):
    cfg = model.config
    seq = [cfg.decoder_start_token_id, *labels, cfg.eos_token_id]
    out = model(x[row : row + 1], mask[row : row + 1], decoder_input_ids=np.array([seq[:-1]]))
    logp = jax.nn.log_softmax(out.logits[0], axis=-1)
    return float(sum(logp[i, t] for i, t in enumerate(seq[1:])))
