"""Joint CTC/attention decoding and LM shallow fusion inside the jitted searches.

* ctc_weight = 1: a finished hypothesis' score is the sum of its CTC prefix-score increments,
  which telescopes to log P_ctc(y): it must equal optax's CTC forward score of those ids.
* LM fusion, greedy: each chosen token is the argmax of log p_att + w log p_lm, checked by
  running the decoder and the LM teacher-forced over the output.
* Bad combinations are refused by name.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from s2t_jax import Speech2TextForConditionalGeneration
from s2t_jax.decoding import ctc
from s2t_jax.models.lm import LMConfig, TransformerLM
from tests.decoding.conftest import CTC_VOCAB as VOCAB
from tests.decoding.conftest import ctc_features as _features


def test_ctc_weight_one_scores_are_the_ctc_forward_score(ctc_model):
    x, mask = _features()
    ids, scores = ctc_model.generate(
        x,
        mask,
        num_beams=6,
        max_length=8,
        ctc_weight=1.0,
        ctc_pre_beam=VOCAB,
        length_penalty=0.0,
        return_scores=True,
        buckets=None,
    )
    enc, enc_mask = ctc_model.encode(x, mask)
    log_probs = ctc.ctc_log_probs(enc, {k: jnp.asarray(v) for k, v in ctc_model.ctc_head.items()})
    cfg = ctc_model.config
    for row in range(2):
        labels = [t for t in ids[row, 1:].tolist() if t not in (cfg.eos_token_id, cfg.pad_token_id)]
        assert ids[row].tolist().count(cfg.eos_token_id) >= 1, ids[row]  # it ended
        assert labels, "an empty hypothesis would make the check vacuous"
        frame_pad = 1.0 - np.asarray(enc_mask[row : row + 1], np.float32)
        loss = optax.ctc_loss(
            log_probs[row : row + 1],
            frame_pad,
            jnp.asarray([labels]),
            jnp.zeros((1, len(labels))),
            blank_id=cfg.bos_token_id,
        )
        assert float(scores[row]) == pytest.approx(-float(loss[0]), abs=1e-3)


@pytest.mark.parametrize("num_beams", [1, 4])
def test_a_forced_tag_is_not_a_ctc_label(ctc_model, num_beams):
    """A multilingual model's forced first token (its language tag) is no CTC label: with
    ctc_weight 1 and every token a candidate the search is CTC's alone, so after the tag it
    must produce what it produces without one, and its score must not count the tag."""
    x, mask = _features()
    kw = dict(num_beams=num_beams, max_length=8, ctc_weight=1.0, ctc_pre_beam=VOCAB,
              length_penalty=0.0, return_scores=True, buckets=None)  # fmt: skip
    plain, plain_scores = ctc_model.generate(x, mask, **kw)
    tag = VOCAB - 1
    tagged, tagged_scores = ctc_model.generate(x, mask, forced_bos_token_id=tag, **kw)
    assert (tagged[:, 1] == tag).all(), tagged
    np.testing.assert_array_equal(tagged[:, 2:], plain[:, 1:-1])
    np.testing.assert_allclose(tagged_scores, plain_scores, atol=1e-4)


def test_lm_fusion_greedy_takes_the_fused_argmax(ctc_model):
    cfg = ctc_model.config
    lm_config = LMConfig(vocab_size=VOCAB, d_model=16, ffn_dim=32, layers=1, attention_heads=2)
    lm = TransformerLM(lm_config)
    lm_params = lm.init(jax.random.key(5), jnp.zeros((1, 4), jnp.int32))["params"]
    lm_params = jax.tree.map(lambda p: 4.0 * p, lm_params)  # a confident LM: it must matter
    x, mask = _features()
    plain = ctc_model.generate(x, mask, max_length=8, buckets=None)
    fused = ctc_model.generate(
        x, mask, max_length=8, lm=(lm_config, lm_params), lm_weight=1.0, buckets=None
    )
    assert not np.array_equal(plain, fused), "the LM changed nothing: the test would be vacuous"
    for row in range(2):
        seq = fused[row : row + 1]
        n = (
            int(np.argmax(seq[0] == cfg.eos_token_id))
            if (seq[0, 1:] == cfg.eos_token_id).any()
            else seq.shape[1] - 1
        )
        prefix = jnp.asarray(seq[:, : max(n, 1)])
        att = ctc_model(x[row : row + 1], mask[row : row + 1], decoder_input_ids=prefix).logits
        lm_logits = lm.apply({"params": lm_params}, prefix)
        joint = jax.nn.log_softmax(att, -1) + jax.nn.log_softmax(lm_logits, -1)
        np.testing.assert_array_equal(np.argmax(joint[0], -1), seq[0, 1 : prefix.shape[1] + 1])


def test_bad_fusion_arguments_are_refused(ctc_model):
    x, mask = _features()
    bare = Speech2TextForConditionalGeneration(ctc_model.config)
    with pytest.raises(ValueError, match="needs a CTC head"):
        bare.generate(x, mask, ctc_weight=0.3)
    with pytest.raises(ValueError, match=r"ctc_weight=1.5 must be in \[0, 1\]"):
        ctc_model.generate(x, mask, ctc_weight=1.5)
    wrong = LMConfig(vocab_size=VOCAB + 1, d_model=16, ffn_dim=32, layers=1, attention_heads=2)
    with pytest.raises(ValueError, match="same vocabulary"):
        ctc_model.generate(x, mask, lm=(wrong, {}), lm_weight=0.2)
    with pytest.raises(ValueError, match="needs lm_weight"):
        ctc_model.generate(x, mask, lm=(wrong, {}))
    with pytest.raises(ValueError, match="needs a language model"):
        ctc_model.generate(x, mask, lm_weight=0.2)
