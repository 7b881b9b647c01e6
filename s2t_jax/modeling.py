"""The user-facing model classes, shaped like transformers' so only the import changes.

`Speech2TextForConditionalGeneration.from_pretrained(path)` takes a transformers directory, one of
ours (config.json + Orbax `params/`), or a fairseq `.pt`. The object holds `config`, `params` (a
plain pytree) and the Flax `module`; calls are jitted once per input shape.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp

from s2t_jax.checkpoints.model_dir import load_model_dir, save_model_dir
from s2t_jax.decoding.settings import read_generation_config
from s2t_jax.models.config import Speech2TextConfig
from s2t_jax.models.layers import DTYPES
from s2t_jax.models.model import Speech2Text
from s2t_jax.models.params import count_params, init_params


@dataclasses.dataclass
class ModelOutput:
    """Attribute and key access, as transformers' outputs allow."""

    logits: jax.Array | None = None
    last_hidden_state: jax.Array | None = None
    encoder_last_hidden_state: jax.Array | None = None
    encoder_attention_mask: jax.Array | None = None

    def __getitem__(self, key):
        return getattr(self, key)


class _PretrainedSpeech2Text:
    with_lm_head = True

    def __init__(self, config: Speech2TextConfig, params=None, seed: int = 0):
        self.config = config
        self.module = Speech2Text(config, with_lm_head=self.with_lm_head)
        if params is None:
            params = init_params(config, jax.random.key(seed), self.with_lm_head)
        param_dtype = DTYPES[config.param_dtype]
        self.params = jax.tree.map(lambda x: jnp.asarray(x, param_dtype), params)
        self.source_dir = None
        # Generation defaults, read once (from_pretrained reads the model's files).
        self.generation_config = read_generation_config(config)

    # --- loading and saving -----------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, dtype=None, param_dtype=None, **config_overrides):
        """Loads a transformers dir, one of ours, or a fairseq .pt. `dtype` sets compute."""
        path = os.fspath(path)
        for key, value in (("dtype", dtype), ("param_dtype", param_dtype)):
            if value is not None:
                config_overrides[key] = jnp.dtype(value).name
        config, params = load_model_dir(path, cls.with_lm_head, **config_overrides)
        model = cls(config, params)
        model.source_dir = path if os.path.isdir(path) else None
        model.generation_config = read_generation_config(config, model.source_dir)
        return model

    def save_pretrained(self, path, transformers_format: bool = False) -> None:
        """Ours: config.json + Orbax params/. transformers_format: config.json + safetensors.

        Tokenizer, feature-extractor and generation files of the source dir are copied along.
        """
        save_model_dir(
            os.fspath(path), self.config, self.params, transformers_format, self.source_dir
        )

    # --- jitted entry points --------------------------------------------------------------------

    @functools.cached_property
    def _jit_forward(self):
        return jax.jit(self.module.apply)

    @functools.cached_property
    def _jit_encode(self):
        return jax.jit(functools.partial(self.module.apply, method=Speech2Text.encode))

    def encode(self, input_features, attention_mask=None, params=None):
        """-> (encoder hidden [batch, src, d_model], mask [batch, src] bool)."""
        params = self.params if params is None else params
        feats = jnp.asarray(input_features, DTYPES[self.config.dtype])
        mask = None if attention_mask is None else jnp.asarray(attention_mask, jnp.int32)
        return self._jit_encode({"params": params}, feats, mask)

    def __call__(
        self,
        input_features,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        params=None,
    ) -> ModelOutput:
        if decoder_input_ids is None:
            raise ValueError("decoder_input_ids is required (shape [batch, target_len])")
        params = self.params if params is None else params
        feats = jnp.asarray(input_features, DTYPES[self.config.dtype])
        mask = None if attention_mask is None else jnp.asarray(attention_mask, jnp.int32)
        dec_mask = None if decoder_attention_mask is None else jnp.asarray(decoder_attention_mask)
        out, enc, enc_mask = self._jit_forward(
            {"params": params}, feats, mask, jnp.asarray(decoder_input_ids, jnp.int32), dec_mask
        )
        if self.with_lm_head:
            return ModelOutput(
                logits=out, encoder_last_hidden_state=enc, encoder_attention_mask=enc_mask
            )
        return ModelOutput(
            last_hidden_state=out, encoder_last_hidden_state=enc, encoder_attention_mask=enc_mask
        )

    def num_parameters(self) -> int:
        return count_params(self.params)


class Speech2TextModel(_PretrainedSpeech2Text):
    """Encoder-decoder without the LM head: returns `last_hidden_state` of the decoder."""

    with_lm_head = False


class Speech2TextForConditionalGeneration(_PretrainedSpeech2Text):
    """Encoder-decoder with the LM head; `generate` runs jitted greedy or beam search."""

    with_lm_head = True

    def generate(self, input_features, attention_mask=None, **kwargs):
        from s2t_jax.decoding.generation import generate

        return generate(self, input_features, attention_mask=attention_mask, **kwargs)
