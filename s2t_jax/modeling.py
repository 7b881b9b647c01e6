"""The user-facing model classes, shaped like transformers' so only the import changes.

`Speech2TextForConditionalGeneration.from_pretrained(path)` takes a transformers directory, one of
ours (config.json + Orbax `params/`), or a fairseq `.pt`. The object holds `config`, `params` (a
plain pytree) and the Flax `module`; calls are jitted once per input shape and set of output
flags. A call returns transformers' output classes (modeling_outputs.py): loss from `labels`,
hidden states, attention weights and the decoder cache, as transformers computes them.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from s2t_jax import modeling_forward as fwd
from s2t_jax.checkpoints.model_dir import load_model_dir, save_model_dir
from s2t_jax.decoding.settings import read_generation_config
from s2t_jax.modeling_outputs import (
    DecoderCache,
    Embedding,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from s2t_jax.modeling_views import DecoderView, EncoderView
from s2t_jax.models.config import Speech2TextConfig
from s2t_jax.models.layers import DTYPES
from s2t_jax.models.model import Speech2Text
from s2t_jax.models.params import as_variables, count_params, fresh_batch_stats, init_params
from s2t_jax.models.subsampler import subsampled_lengths


class _PretrainedSpeech2Text:
    with_lm_head = True
    main_input_name = "input_features"
    base_model_prefix = "model"

    def __init__(self, config: Speech2TextConfig, params=None, seed: int = 0):
        self.config = config
        self.module = Speech2Text(config, with_lm_head=self.with_lm_head)
        if params is None:
            params = init_params(config, jax.random.key(seed), self.with_lm_head)
        param_dtype = DTYPES[config.param_dtype]
        self.params = jax.tree.map(lambda x: jnp.asarray(x, param_dtype), params)
        self.source_dir = None
        # Batch-norm running statistics (the Conformer encoder), or None.
        self.batch_stats = fresh_batch_stats(config)
        # The CTC head ({"kernel" [d_model, vocab], "bias" [vocab]}) of a model trained with a
        # CTC loss, or None: joint CTC/attention decoding and word timestamps use it.
        self.ctc_head = None
        # Generation defaults, read once (from_pretrained reads the model's files).
        self.generation_config = read_generation_config(config)

    @property
    def variables(self):
        """What the speech model's apply takes: `params`, or {"params", "batch_stats"} for a
        model with batch norm (see models.params.as_variables)."""
        if self.batch_stats is None:
            return self.params
        return {"params": self.params, "batch_stats": self.batch_stats}

    # --- loading and saving -----------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, path, dtype=None, param_dtype=None, subfolder: str = "", **config_overrides
    ):
        """Loads a transformers dir, one of ours, or a fairseq .pt. `dtype` sets compute;
        `subfolder` is a directory inside `path`, as in transformers."""
        path = os.fspath(path)
        if subfolder:
            path = os.path.join(path, subfolder)
        for key, value in (("dtype", dtype), ("param_dtype", param_dtype)):
            if value is not None:
                config_overrides[key] = jnp.dtype(value).name
        config, params, extras = load_model_dir(
            path, cls.with_lm_head, with_extras=True, **config_overrides
        )
        model = cls(config, params)
        model.ctc_head = extras["ctc_head"]
        if extras["batch_stats"] is not None:
            model.batch_stats = extras["batch_stats"]
        model.source_dir = path if os.path.isdir(path) else None
        model.generation_config = read_generation_config(config, model.source_dir)
        return model

    def save_pretrained(self, path, transformers_format: bool = False) -> None:
        """Ours: config.json + Orbax params/. transformers_format: config.json + safetensors.

        Tokenizer, feature-extractor and generation files of the source dir are copied along.
        """
        save_model_dir(
            os.fspath(path),
            self.config,
            self.params,
            transformers_format,
            self.source_dir,
            ctc_head=self.ctc_head,
            batch_stats=self.batch_stats,
        )

    # --- jitted entry points --------------------------------------------------------------------

    @functools.cached_property
    def _jit_encode(self):
        return jax.jit(functools.partial(self.module.apply, method=Speech2Text.encode))

    @functools.cached_property
    def _jits(self) -> dict:
        return {}

    def _jitted(self, fn, **flags):
        """`fn(module, ...)` jitted once per set of (static) flags."""
        key = (fn.__name__, tuple(sorted(flags.items())))
        if key not in self._jits:
            self._jits[key] = jax.jit(functools.partial(fn, self.module, **flags))
        return self._jits[key]

    def _features(self, input_features, attention_mask):
        feats = None
        if input_features is not None:
            feats = fwd.to_array(input_features, DTYPES[self.config.dtype])
        mask = None if attention_mask is None else fwd.to_array(attention_mask, jnp.int32)
        return feats, mask

    def encode(self, input_features, attention_mask=None, params=None):
        """-> (encoder hidden [batch, src, d_model], mask [batch, src] bool)."""
        params = self.variables if params is None else params
        feats, mask = self._features(input_features, attention_mask)
        return self._jit_encode(as_variables(params), feats, mask)

    def _flag(self, value, name, default=False):
        value = getattr(self.config, name, default) if value is None else value
        if name == "output_attentions" and value and self._relative_positions():
            raise ValueError(
                "output_attentions is not supported with pos_enc_type='rel_pos': the weights "
                "are recomputed from the attention inputs, which leave out relative positions"
            )
        return value

    def _relative_positions(self) -> bool:
        cfg = self.config
        return getattr(cfg, "encoder_type", "") == "conformer" and (
            getattr(cfg, "pos_enc_type", "") == "rel_pos"
        )

    def __call__(
        self,
        input_features=None,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        encoder_outputs=None,
        past_key_values=None,
        decoder_inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        *,
        cache=None,
        params=None,
    ):
        """transformers' forward: the same arguments, outputs and tuple order (return_dict=False).

        `past_key_values` (or `cache`): the `cache` of an earlier call, to run only the new
        `decoder_input_ids`; `encoder_outputs`: an earlier encoding (a tuple or an output with
        `last_hidden_state`), used instead of `input_features`.
        """
        if past_key_values is not None and cache is not None:
            raise ValueError("You cannot specify both `cache` and `past_key_values`.")
        past = cache if cache is not None else past_key_values
        if decoder_inputs_embeds is not None:
            raise ValueError("decoder_inputs_embeds is not supported; pass decoder_input_ids")
        if labels is not None and not self.with_lm_head:
            raise TypeError("Speech2TextModel has no LM head: `labels` needs the model with one")
        params = self.variables if params is None else params
        cfg = self.config
        attentions = bool(self._flag(output_attentions, "output_attentions"))
        hidden_sel = self._flag(output_hidden_states, "output_hidden_states")
        use_cache = bool(self._flag(use_cache, "use_cache", True))
        return_dict = bool(self._flag(return_dict, "return_dict", True))
        if labels is not None:
            labels = fwd.to_array(labels, jnp.int32)
            if decoder_input_ids is None:
                decoder_input_ids = fwd.shift_tokens_right(
                    labels, cfg.pad_token_id, cfg.decoder_start_token_id
                )
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids (shape [batch, target_len]) or labels is required")
        ids = fwd.to_array(decoder_input_ids, jnp.int32)
        dec_mask = None if decoder_attention_mask is None else fwd.to_array(decoder_attention_mask)
        feats, mask = self._features(input_features, attention_mask)
        enc, enc_extra = fwd.split_encoder_outputs(encoder_outputs)
        if enc is None and feats is None:
            raise ValueError("input_features or encoder_outputs is required")
        if past is not None:
            res = self._call_with_past(
                params, past, feats, mask, enc, ids, dec_mask, attentions, hidden_sel, use_cache
            )
        else:
            cross = None if enc is None else fwd.frame_mask(cfg, mask, enc.shape[1])
            run = self._jitted(
                fwd.forward,
                hidden=bool(hidden_sel),
                attentions=attentions,
                cache=use_cache,
            )
            res = run(params, feats, mask, enc, cross, ids, dec_mask, labels)
        if enc is not None:  # transformers passes a given encoding's extras through
            res.update(enc_extra)
        out = self._output(res, hidden_sel)
        return out if return_dict else out.to_tuple()

    def _call_with_past(
        self, params, past, feats, mask, enc, ids, dec_mask, attentions, hidden_sel, use_cache
    ):
        if attentions or hidden_sel:
            raise ValueError(
                "output_attentions / output_hidden_states are not supported together with "
                "past_key_values: run the whole target without a cache to get them"
            )
        if dec_mask is not None:
            raise ValueError(
                "decoder_attention_mask is not supported together with past_key_values"
            )
        if hasattr(past, "to_legacy_cache"):
            past = past.to_legacy_cache()
        # transformers' EncoderDecoderCache iterates per layer as (k, v, sliding, k, v, sliding).
        past = [
            tuple(layer)[:2] + tuple(layer)[3:5] if len(layer) == 6 else layer for layer in past
        ]
        past = fwd.tree_to_arrays(tuple(tuple(layer) for layer in past))
        if len(past) != self.config.decoder_layers or any(len(layer) != 4 for layer in past):
            raise ValueError(
                "past_key_values must hold, per decoder layer, (self_k, self_v, cross_k, "
                "cross_v) [batch, heads, len, head_dim], as a call's `cache` returns them"
            )
        if enc is None:
            enc, enc_mask = self._jit_encode(as_variables(params), feats, mask)
        else:
            enc_mask = fwd.frame_mask(self.config, mask, enc.shape[1])
        src = past[0][2].shape[2]
        cross = jnp.ones((ids.shape[0], src), bool) if mask is None else enc_mask
        run = self._jitted(fwd.decode_with_past, with_head=self.with_lm_head)
        out, new_cache = run(params, past, ids, cross)
        res = {"out": out, "enc": enc, "enc_mask": enc_mask}
        if use_cache:
            res["cache"] = new_cache
        return res

    def _output(self, res, hidden_sel):
        if "cache" in res:
            res["cache"] = DecoderCache(res["cache"])
        for key in ("encoder_hidden_states", "decoder_hidden_states"):
            if key in res:
                res[key] = fwd.select_states(res[key], hidden_sel, self.config.num_hidden_layers)
        common = {
            k: res.get(k)
            for k in (
                "cache",
                "decoder_hidden_states",
                "decoder_attentions",
                "cross_attentions",
                "encoder_hidden_states",
                "encoder_attentions",
            )
        }
        common["encoder_last_hidden_state"] = res["enc"]
        common["encoder_attention_mask"] = res["enc_mask"]
        if self.with_lm_head:
            return Seq2SeqLMOutput(loss=res.get("loss"), logits=res["out"], **common)
        return Seq2SeqModelOutput(last_hidden_state=res["out"], **common)

    # --- transformers' model helpers ----------------------------------------------------------

    def get_encoder(self):
        return EncoderView(self)

    def get_decoder(self):
        return DecoderView(self)

    def get_input_embeddings(self) -> Embedding:
        return Embedding(self.params["decoder"]["embed_tokens"]["embedding"])

    def get_output_embeddings(self) -> Embedding | None:
        if not self.with_lm_head:
            return None
        if self.config.tie_word_embeddings:
            return self.get_input_embeddings()
        return Embedding(self.params["lm_head"]["kernel"].T)

    def resize_token_embeddings(
        self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing: bool = True
    ) -> Embedding:
        """Resizes the token embedding (and an untied LM head) to `new_num_tokens` rows, as
        transformers does: rows kept, new rows at the old rows' mean (mean_resizing; transformers
        samples them with covariance 1e-9 x the old one, so within ~1e-4 of it) or drawn from
        N(0, init_std); config.vocab_size follows."""
        old = self.config.vocab_size
        if new_num_tokens is None and pad_to_multiple_of is None:
            return self.get_input_embeddings()
        n = old if new_num_tokens is None else int(new_num_tokens)
        if pad_to_multiple_of is not None:
            n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
        config = self.config.replace(vocab_size=n)
        rng = np.random.default_rng(n)

        def resize(rows):  # [vocab, d_model] -> [n, d_model]
            rows = np.asarray(rows, np.float32)
            if n <= old:
                return rows[:n]
            if mean_resizing:
                new = np.broadcast_to(rows.mean(0), (n - old, rows.shape[1]))
            else:
                new = rng.normal(0.0, config.init_std, (n - old, rows.shape[1]))
            return np.concatenate([rows, new.astype(np.float32)])

        params = jax.tree.map(np.asarray, self.params)
        embed = params["decoder"]["embed_tokens"]
        embed["embedding"] = resize(embed["embedding"])
        if "lm_head" in params:
            params["lm_head"]["kernel"] = resize(params["lm_head"]["kernel"].T).T
        dtype = DTYPES[config.param_dtype]
        self.config = config
        self.module = Speech2Text(config, with_lm_head=self.with_lm_head)
        self.params = jax.tree.map(lambda x: jnp.asarray(x, dtype), params)
        for name in ("_jits", "_jit_encode"):
            self.__dict__.pop(name, None)
        return self.get_input_embeddings()

    def _get_feat_extract_output_lengths(self, input_lengths):
        """Frames after the subsampler: (L - 1) // 2 + 1 per conv layer."""
        return subsampled_lengths(input_lengths, self.config.num_conv_layers)

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """All params are trainable here; `exclude_embeddings` leaves out the token embedding
        (positions are not parameters, and an untied LM head counts, as in transformers)."""
        total = count_params(self.params)
        if exclude_embeddings:
            total -= int(np.prod(self.params["decoder"]["embed_tokens"]["embedding"].shape))
        return total


class Speech2TextModel(_PretrainedSpeech2Text):
    """Encoder-decoder without the LM head: returns `last_hidden_state` of the decoder."""

    with_lm_head = False


class Speech2TextForConditionalGeneration(_PretrainedSpeech2Text):
    """Encoder-decoder with the LM head; `generate` runs jitted greedy or beam search."""

    with_lm_head = True

    def generate(self, input_features, attention_mask=None, **kwargs):
        from s2t_jax.decoding.generation import generate

        return generate(self, input_features, attention_mask=attention_mask, **kwargs)
