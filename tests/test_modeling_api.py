"""The user classes' transformers API against transformers itself, on the same random weights:
labels and loss, hidden states, attention weights, tuple outputs, encoder_outputs, the decoder
cache (past_key_values), the encoder / decoder / embedding accessors and resizing."""

import numpy as np
import pytest
import torch
import transformers

from s2t_jax import Speech2TextForConditionalGeneration, Speech2TextModel
from tests.hf_models import random_features, save_hf_model

TOL = 1e-5  # fp32, max |diff|


def _make_pair(tmp_path_factory, name):
    path = tmp_path_factory.mktemp(name)
    tied = name == "tied"
    # Few layers keep compiles short; the tied model's decoder is deeper than its encoder, which
    # shows how transformers counts hidden-state indices.
    layers = dict(encoder_layers=1, decoder_layers=2 if tied else 1)
    hf = save_hf_model(path, seed=1, tie_word_embeddings=tied, **layers)
    return hf, Speech2TextForConditionalGeneration.from_pretrained(path), path


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """Most tests run on one model, so that each jitted variant compiles once for all."""
    return _make_pair(tmp_path_factory, "tied")


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    return _make_pair(tmp_path_factory, "untied")


@pytest.fixture(params=["tied", "untied"])
def pair(request):
    return request.getfixturevalue(request.param)


def _inputs(config):
    x, mask = random_features(2, 37, config.input_feat_per_channel, seed=2, lengths=(37, 21))
    labels = np.random.default_rng(3).integers(3, config.vocab_size, (2, 6))
    labels[1, 4:] = -100
    return x, mask, labels


def _torch(**arrays):
    return {k: None if v is None else torch.tensor(v) for k, v in arrays.items()}


def _assert_close(ref, ours, name=""):
    """ref: a torch tensor or a tuple of them; ours: the matching jax array(s)."""
    if isinstance(ref, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(ref), name
        for i, (a, b) in enumerate(zip(ref, ours)):
            _assert_close(a, b, f"{name}[{i}]")
        return
    ref = ref.numpy()
    assert np.shape(ours) == ref.shape, name
    np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL, rtol=0, err_msg=name)


def _assert_cache_close(ref, ours):
    layers = zip(ref.self_attention_cache.layers, ref.cross_attention_cache.layers)
    assert len(ours) == len(ref.self_attention_cache.layers)
    for (self_layer, cross_layer), got in zip(layers, ours):
        want = (self_layer.keys, self_layer.values, cross_layer.keys, cross_layer.values)
        _assert_close(want, tuple(got), "cache")


def test_labels_give_transformers_loss_and_decoder_inputs(tied):
    hf, ours, _ = tied
    x, mask, labels = _inputs(ours.config)
    with torch.no_grad():
        ref = hf(**_torch(input_features=x, attention_mask=mask, labels=labels))
    out = ours(x, attention_mask=mask, labels=labels)
    _assert_close(ref.loss, out.loss, "loss")
    _assert_close(ref.logits, out.logits, "logits")
    # Given decoder inputs win over the shifted labels, in both.
    ids = np.full_like(labels, 5)
    with torch.no_grad():
        ref = hf(
            **_torch(input_features=x, attention_mask=mask, decoder_input_ids=ids, labels=labels)
        )
    _assert_close(ref.loss, ours(x, mask, ids, labels=labels).loss, "loss, given ids")
    with pytest.raises(ValueError):
        ours(x, mask)  # neither decoder_input_ids nor labels


def test_hidden_states_attentions_and_cache_match(pair):
    hf, ours, _ = pair
    x, mask, labels = _inputs(ours.config)
    kw = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ref = hf(**_torch(input_features=x, attention_mask=mask, labels=labels), **kw)
    out = ours(x, mask, labels=labels, **kw)
    assert out.keys() == list(ref.keys())
    for key in ref.keys():
        if key == "cache":
            _assert_cache_close(ref.cache, out.cache)
        else:
            _assert_close(ref[key], out[key], key)
    # The last encoder state is after the final layer norm, as transformers ties it.
    _assert_close(ref.encoder_last_hidden_state, out.encoder_hidden_states[-1])


def test_base_model_hidden_states(tied):
    _, _, path = tied
    ref_model = transformers.Speech2TextModel.from_pretrained(path).eval()
    base = Speech2TextModel.from_pretrained(path)
    x, mask, labels = _inputs(base.config)
    ids = np.where(labels < 0, 1, labels)
    with torch.no_grad():
        ref = ref_model(
            **_torch(input_features=x, attention_mask=mask, decoder_input_ids=ids),
            output_hidden_states=True,
            use_cache=False,
        )
    out = base(x, mask, ids, output_hidden_states=True, use_cache=False)
    assert out.keys() == list(ref.keys())
    for key in ref.keys():
        _assert_close(ref[key], out[key], key)
    with pytest.raises(TypeError):
        base(x, mask, labels=labels)


@pytest.mark.parametrize("selection", [0, -1, [1, -1]])
def test_hidden_states_selected_by_index(tied, selection):
    hf, ours, _ = tied
    x, mask, labels = _inputs(ours.config)
    with torch.no_grad():
        ref = hf(
            **_torch(input_features=x, attention_mask=mask, labels=labels),
            output_hidden_states=selection,
        )
    out = ours(x, mask, labels=labels, output_hidden_states=selection)
    for key in ("encoder_hidden_states", "decoder_hidden_states"):
        assert (key in out) == (key in ref), key  # 0 is falsy: none asked for, in both
        if key not in ref:
            continue
        assert [s is None for s in out[key]] == [s is None for s in ref[key]], key
        for a, b in zip(ref[key], out[key]):
            if a is not None:
                _assert_close(a, b, key)


@pytest.mark.parametrize("use_cache", [None, False])
def test_tuple_outputs_in_transformers_order(tied, use_cache):
    hf, ours, _ = tied
    x, mask, labels = _inputs(ours.config)
    kw = dict(use_cache=use_cache, output_hidden_states=True, return_dict=False)
    with torch.no_grad():
        ref = hf(**_torch(input_features=x, attention_mask=mask, labels=labels), **kw)
    out = ours(x, mask, labels=labels, **kw)
    assert isinstance(out, tuple) and len(out) == len(ref)
    for i, (a, b) in enumerate(zip(ref, out)):
        if isinstance(a, transformers.EncoderDecoderCache):
            _assert_cache_close(a, b)
        else:
            _assert_close(a, b, f"[{i}]")
    full = ours(x, mask, labels=labels, use_cache=use_cache)
    assert len(full.to_tuple()) == (4 if use_cache is None else 3)
    assert full[0] is full.loss and full[1] is full.logits and full["logits"] is full.logits
    assert list(full) == full.keys() and "loss" in full and "encoder_hidden_states" not in full
    assert (full.past_key_values is None) == (use_cache is False)


def test_encoder_outputs_are_reused(tied):
    hf, ours, _ = tied
    x, mask, labels = _inputs(ours.config)
    ids = np.where(labels < 0, 1, labels)
    with torch.no_grad():
        ref_enc = hf.get_encoder()(**_torch(input_features=x, attention_mask=mask))
        ref = hf(
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(ids),
            encoder_outputs=(ref_enc.last_hidden_state,),
        )
    enc = ours.get_encoder()(x, attention_mask=mask, output_hidden_states=True)
    _assert_close(ref_enc.last_hidden_state, enc.last_hidden_state, "encoder")
    for given in (enc, (enc.last_hidden_state,), ref_enc):  # ours, a tuple, transformers'
        out = ours(attention_mask=mask, decoder_input_ids=ids, encoder_outputs=given)
        _assert_close(ref.logits, out.logits, "logits")
    # transformers passes a given encoding's hidden states through.
    out = ours(attention_mask=mask, decoder_input_ids=ids, encoder_outputs=enc)
    assert out.encoder_hidden_states is enc.hidden_states


def test_past_key_values_continue_decoding(tied):
    hf, ours, _ = tied
    x, mask, labels = _inputs(ours.config)
    ids = np.where(labels < 0, 1, labels)
    with torch.no_grad():
        ref1 = hf(**_torch(input_features=x, attention_mask=mask, decoder_input_ids=ids[:, :3]))
    # transformers' own cache object is taken too (before transformers extends it in place).
    from_theirs = ours(x, mask, ids[:, 3:5], past_key_values=ref1.cache)
    with torch.no_grad():
        ref2 = hf(
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(ids[:, 3:5]),
            encoder_outputs=(ref1.encoder_last_hidden_state,),
            past_key_values=ref1.cache,
        )
    out1 = ours(x, mask, ids[:, :3])
    assert out1.past_key_values.get_seq_length() == 3
    out2 = ours(
        attention_mask=mask,
        decoder_input_ids=ids[:, 3:5],
        encoder_outputs=(out1.encoder_last_hidden_state,),
        past_key_values=out1.past_key_values,
    )
    _assert_close(ref2.logits, out2.logits, "logits with past")
    _assert_close(ref2.logits, from_theirs.logits, "logits with transformers' past")
    _assert_cache_close(ref2.cache, out2.cache)
    with pytest.raises(ValueError, match="past_key_values"):
        ours(x, mask, ids[:, 3:5], past_key_values=out1.cache, output_hidden_states=True)


def test_get_decoder_matches_transformers_decoder(tied):
    hf, ours, _ = tied
    x, mask, labels = _inputs(ours.config)
    ids = np.where(labels < 0, 1, labels)
    enc = ours.get_encoder()(x, mask).last_hidden_state
    enc_mask = np.asarray(ours(x, mask, ids).encoder_attention_mask).astype(np.int64)
    with torch.no_grad():
        ref = hf.get_decoder()(
            input_ids=torch.tensor(ids),
            encoder_hidden_states=torch.tensor(np.asarray(enc)),
            encoder_attention_mask=torch.tensor(enc_mask),
            output_hidden_states=True,
            output_attentions=True,
        )
    out = ours.get_decoder()(
        input_ids=ids,
        encoder_hidden_states=enc,
        encoder_attention_mask=enc_mask,
        output_hidden_states=True,
        output_attentions=True,
    )
    assert out.keys() == list(ref.keys())
    for key in ref.keys():
        if key == "cache":
            _assert_cache_close(ref.cache, out.cache)
        else:
            _assert_close(ref[key], out[key], key)


def test_embeddings_lengths_and_sizes(pair):
    hf, ours, _ = pair
    _assert_close(hf.get_input_embeddings().weight.detach(), ours.get_input_embeddings().weight)
    _assert_close(hf.get_output_embeddings().weight.detach(), ours.get_output_embeddings().weight)
    assert ours.main_input_name == hf.main_input_name == "input_features"
    lengths = torch.tensor([1, 2, 37, 100, 3001])
    got = ours._get_feat_extract_output_lengths(lengths.numpy())
    assert got.tolist() == hf._get_feat_extract_output_lengths(lengths).tolist()
    for kw in ({}, {"only_trainable": True}, {"exclude_embeddings": True}):
        assert ours.num_parameters(**kw) == hf.num_parameters(**kw), kw
    assert Speech2TextModel(ours.config, ours.params).get_output_embeddings() is None


@pytest.mark.parametrize(
    "name, size, multiple, mean_resizing",
    [("tied", 80, None, True), ("untied", 70, 16, False), ("untied", 50, None, True)],
)
def test_resize_token_embeddings(request, name, size, multiple, mean_resizing):
    _, _, path = request.getfixturevalue(name)
    hf = transformers.Speech2TextForConditionalGeneration.from_pretrained(path).eval()
    ours = Speech2TextForConditionalGeneration.from_pretrained(path)
    old = ours.config.vocab_size
    x, mask, labels = _inputs(ours.config)  # ids within the old vocabulary
    ref = hf.resize_token_embeddings(size, multiple, mean_resizing=mean_resizing)
    got = ours.resize_token_embeddings(size, multiple, mean_resizing=mean_resizing)
    n = ref.weight.shape[0]
    assert got.weight.shape == tuple(ref.weight.shape)
    assert ours.config.vocab_size == hf.config.vocab_size == n
    assert ours.get_output_embeddings().weight.shape == tuple(hf.lm_head.weight.shape)
    kept = min(n, old)
    for a, b in ((hf.get_input_embeddings(), got), (hf.lm_head, ours.get_output_embeddings())):
        a = a.weight.detach().numpy()
        np.testing.assert_allclose(np.asarray(b.weight)[:kept], a[:kept], atol=0, rtol=0)
        if n > old and mean_resizing:  # transformers samples around the mean with 1e-9 x cov
            np.testing.assert_allclose(np.asarray(b.weight)[old:], a[old:], atol=1e-4, rtol=0)
        elif n > old:  # both N(0, init_std)
            std = np.asarray(b.weight)[old:].std()
            assert 0.5 * ours.config.init_std < std < 2 * ours.config.init_std
    ids = np.where(labels < 0, 1, labels) % min(n, old)
    out = ours(x, mask, ids)
    with torch.no_grad():
        want = hf(**_torch(input_features=x, attention_mask=mask, decoder_input_ids=ids)).logits
    np.testing.assert_allclose(
        np.asarray(out.logits)[..., :kept], want.numpy()[..., :kept], atol=1e-4, rtol=0
    )


def test_from_pretrained_subfolder(tied, tmp_path):
    hf, ours, _ = tied
    hf.save_pretrained(tmp_path / "nested" / "model")
    loaded = Speech2TextForConditionalGeneration.from_pretrained(tmp_path, subfolder="nested/model")
    _assert_close(hf.get_input_embeddings().weight.detach(), loaded.get_input_embeddings().weight)
