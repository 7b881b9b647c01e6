"""Our Flax model against transformers' PyTorch Speech2Text on the same random weights."""

import numpy as np
import pytest
import torch

from s2t_jax import Speech2TextForConditionalGeneration, Speech2TextModel
from s2t_jax.models.kv_cache import grow_self_cache
from s2t_jax.models.model import Speech2Text
from tests.hf_models import SHAPES, random_features, save_hf_model

TOL = 1e-4  # fp32, max |diff| on logits and on encoder states of valid frames


@pytest.fixture(scope="module", params=sorted(SHAPES))
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    hf = save_hf_model(path, seed=1, **SHAPES[request.param])
    return hf, Speech2TextForConditionalGeneration.from_pretrained(path), path


def _hf_forward(hf, x, mask, ids):
    with torch.no_grad():
        return hf(
            input_features=torch.tensor(x),
            attention_mask=None if mask is None else torch.tensor(mask),
            decoder_input_ids=torch.tensor(ids),
        )


def _inputs(model, lengths=(53, 31, 17)):
    feat = model.config.input_feat_per_channel
    x, mask = random_features(len(lengths), max(lengths), feat, seed=2, lengths=lengths)
    ids = np.random.default_rng(3).integers(3, model.config.vocab_size, (len(lengths), 7))
    ids[:, 0] = model.config.decoder_start_token_id
    return x, mask, ids


def test_padded_batch_with_mask(pair):
    hf, ours, _ = pair
    x, mask, ids = _inputs(ours)
    ref = _hf_forward(hf, x, mask, ids)
    out = ours(x, attention_mask=mask, decoder_input_ids=ids)
    assert out.logits.shape == tuple(ref.logits.shape)
    np.testing.assert_allclose(np.asarray(out.logits), ref.logits.numpy(), atol=TOL, rtol=0)
    valid = np.asarray(out.encoder_attention_mask)
    assert valid.sum(1).tolist() == [ours.config.subsampled_length(n) for n in (53, 31, 17)]
    enc, ref_enc = np.asarray(out.encoder_last_hidden_state), ref.encoder_last_hidden_state.numpy()
    assert enc.shape == ref_enc.shape
    np.testing.assert_allclose(enc[valid], ref_enc[valid], atol=TOL, rtol=0)


def test_without_attention_mask(pair):
    hf, ours, _ = pair
    x, _, ids = _inputs(ours)
    ref = _hf_forward(hf, x, None, ids)
    out = ours(x, decoder_input_ids=ids)
    np.testing.assert_allclose(np.asarray(out.logits), ref.logits.numpy(), atol=TOL, rtol=0)
    np.testing.assert_allclose(
        np.asarray(out.encoder_last_hidden_state),
        ref.encoder_last_hidden_state.numpy(),
        atol=TOL,
        rtol=0,
    )


def test_decoder_attention_mask(pair):
    hf, ours, _ = pair
    x, mask, ids = _inputs(ours)
    dec_mask = np.ones_like(ids)
    dec_mask[1, 5:] = 0
    with torch.no_grad():
        ref = hf(
            input_features=torch.tensor(x),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(ids),
            decoder_attention_mask=torch.tensor(dec_mask),
        )
    out = ours(x, mask, ids, decoder_attention_mask=dec_mask)
    np.testing.assert_allclose(np.asarray(out.logits), ref.logits.numpy(), atol=TOL, rtol=0)


@pytest.mark.parametrize("beams", [1, 3])
def test_decode_step_reproduces_teacher_forcing(pair, beams):
    """The one cached step, as the searches run it (beams of an item adjacent, each with its
    own history; a cache that starts short and grows), against the teacher-forced logits."""
    _, ours, _ = pair
    x, mask, ids = _inputs(ours)
    batch, tgt = ids.shape
    item = np.repeat(np.arange(batch), beams)  # [rows]: the item each row searches
    history = ids[(item + np.tile(np.arange(beams), batch)) % batch]  # [rows, tgt]
    full = np.asarray(ours(x[item], mask[item], history).logits)  # [rows, tgt, vocab]
    variables = {"params": ours.params}
    enc, enc_mask = ours.encode(x, mask)
    cache = ours.module.apply(variables, enc, enc_mask, beams, 4, method=Speech2Text.init_cache)
    for t in range(tgt):
        if t == 4:
            cache = grow_self_cache(cache, tgt)
        logits, cache = ours.module.apply(
            variables,
            np.asarray(history[:, t], np.int32),
            t,
            cache,
            tgt + 1,
            method=Speech2Text.decode_step,
        )
        np.testing.assert_allclose(np.asarray(logits), full[:, t], atol=1e-5, rtol=0)


def test_base_model_returns_last_hidden_state(pair):
    hf, _, path = pair
    import transformers

    base = Speech2TextModel.from_pretrained(path)
    ref_model = transformers.Speech2TextModel.from_pretrained(path).eval()
    x, mask, ids = _inputs(base)
    with torch.no_grad():
        ref = ref_model(
            input_features=torch.tensor(x),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(ids),
        )
    out = base(x, mask, ids)
    assert out.logits is None
    np.testing.assert_allclose(
        np.asarray(out.last_hidden_state), ref.last_hidden_state.numpy(), atol=TOL, rtol=0
    )


def test_bf16_compute_close_to_fp32(pair):
    _, _, path = pair
    fp32 = Speech2TextForConditionalGeneration.from_pretrained(path)
    bf16 = Speech2TextForConditionalGeneration.from_pretrained(path, dtype="bfloat16")
    assert bf16.params["decoder"]["embed_tokens"]["embedding"].dtype == np.float32
    x, mask, ids = _inputs(fp32)
    a = np.asarray(fp32(x, mask, ids).logits)
    b = np.asarray(bf16(x, mask, ids).logits)
    # bf16 keeps 8 mantissa bits. Measured on these shapes: max |diff| ~0.003 on logits of scale
    # ~0.4 (under 1% of it); we allow 2%.
    scale = np.abs(a).max()
    assert np.abs(a - b).max() < 0.02 * scale
    assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.9


def test_zero_padded_frames_makes_output_independent_of_padding(pair):
    _, ours, path = pair
    x, mask, ids = _inputs(ours, lengths=(40,))
    padded_x = np.concatenate([x, np.full((1, 24, x.shape[2]), 3.0, np.float32)], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((1, 24), np.int32)], axis=1)
    zeroing = Speech2TextForConditionalGeneration.from_pretrained(path, zero_padded_frames=True)
    a = np.asarray(zeroing(x, mask, ids).logits)
    b = np.asarray(zeroing(padded_x, padded_mask, ids).logits)
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    # Without the option (transformers' behaviour) padding content leaks into valid frames.
    n = int(np.asarray(ours.encode(x, mask)[1]).sum())
    c = np.asarray(ours.encode(x, mask)[0])[:, :n]
    d = np.asarray(ours.encode(padded_x, padded_mask)[0])[:, :n]
    assert np.abs(c - d).max() > 1e-3
    e = np.asarray(zeroing.encode(padded_x, padded_mask)[0])[:, :n]
    np.testing.assert_allclose(np.asarray(zeroing.encode(x, mask)[0])[:, :n], e, atol=1e-5)
