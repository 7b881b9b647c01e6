"""`model.get_encoder()` and `model.get_decoder()`: the encoder and the decoder alone, called
as transformers' Speech2TextEncoder / Speech2TextDecoder are, over the model's own weights
and jitted forward passes (modeling_forward.py)."""

from __future__ import annotations

import jax.numpy as jnp

from s2t_jax import modeling_forward as fwd
from s2t_jax.modeling_outputs import (
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    DecoderCache,
)
from s2t_jax.models.layers import DTYPES


class EncoderView:
    """`model.get_encoder()`: the encoder alone, called as transformers' Speech2TextEncoder."""

    main_input_name = "input_features"

    def __init__(self, model):
        self._model = model
        self.config = model.config

    def __call__(
        self,
        input_features,
        attention_mask=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        m = self._model
        feats, mask = m._features(input_features, attention_mask)
        hidden_sel = m._flag(output_hidden_states, "output_hidden_states")
        run = m._jitted(
            fwd.encode,
            hidden=bool(hidden_sel),
            attentions=bool(m._flag(output_attentions, "output_attentions")),
        )
        res = run(m.params, feats, mask)
        hidden = res.get("hidden_states")
        out = BaseModelOutput(
            last_hidden_state=res["enc"],
            hidden_states=None
            if hidden is None
            else fwd.select_states(hidden, hidden_sel, m.config.num_hidden_layers),
            attentions=res.get("attentions"),
        )
        return out if m._flag(return_dict, "return_dict", True) else out.to_tuple()


class DecoderView:
    """`model.get_decoder()`: the decoder alone, called as transformers' Speech2TextDecoder
    (encoder_attention_mask is the subsampled [batch, src] mask)."""

    def __init__(self, model):
        self._model = model
        self.config = model.config

    def __call__(
        self,
        input_ids=None,
        attention_mask=None,
        encoder_hidden_states=None,
        encoder_attention_mask=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
    ):
        m = self._model
        if past_key_values is not None or inputs_embeds is not None:
            raise ValueError(
                "get_decoder()(...) takes neither past_key_values nor inputs_embeds; call the "
                "model itself with past_key_values"
            )
        hidden_sel = m._flag(output_hidden_states, "output_hidden_states")
        run = m._jitted(
            fwd.forward,
            hidden=bool(hidden_sel),
            attentions=bool(m._flag(output_attentions, "output_attentions")),
            cache=bool(m._flag(use_cache, "use_cache", True)),
        )
        enc = fwd.to_array(encoder_hidden_states, DTYPES[m.config.dtype])
        cross = None if encoder_attention_mask is None else fwd.to_array(encoder_attention_mask)
        dec_mask = None if attention_mask is None else fwd.to_array(attention_mask)
        ids = fwd.to_array(input_ids, jnp.int32)
        res = run(m.params, None, None, enc, cross, ids, dec_mask, None)
        cache = res.get("cache")
        hidden = res.get("decoder_hidden_states")
        out = BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=res["dec_h"],
            cache=None if cache is None else DecoderCache(cache),
            hidden_states=None
            if hidden is None
            else fwd.select_states(hidden, hidden_sel, m.config.num_hidden_layers),
            attentions=res.get("decoder_attentions"),
            cross_attentions=res.get("cross_attentions"),
        )
        return out if m._flag(return_dict, "return_dict", True) else out.to_tuple()
