"""Speech2Text as one Flax module, with the entry points decoding and training build on.

Every method is pure: `module.apply({"params": params}, ..., method=...)`; a Conformer encoder
also needs its `batch_stats` (batch-norm running statistics) in the variables. The params tree
mirrors transformers' names (encoder/conv/conv_layers_0, decoder/layers_3/encoder_attn/q_proj,
lm_head), which keeps checkpoint conversion a name table.
"""

import jax.numpy as jnp
from flax import linen as nn

from s2t_jax.models.conformer import ConformerEncoder
from s2t_jax.models.decoder import Decoder
from s2t_jax.models.encoder import Encoder
from s2t_jax.models.layers import dtypes


class Speech2Text(nn.Module):
    """Encoder-decoder with an LM head; `with_lm_head=False` is transformers' Speech2TextModel."""

    config: object
    with_lm_head: bool = True

    def setup(self):
        cfg = self.config
        # One model family: only the encoder depends on config.encoder_type.
        encoder = ConformerEncoder if cfg.encoder_type == "conformer" else Encoder
        self.encoder = encoder(cfg, name="encoder")
        self.decoder = Decoder(cfg, name="decoder")
        if self.with_lm_head and not cfg.tie_word_embeddings:
            dtype, param_dtype = dtypes(cfg)
            self.lm_head = nn.Dense(
                cfg.vocab_size,
                use_bias=False,
                dtype=dtype,
                param_dtype=param_dtype,
                kernel_init=nn.initializers.normal(cfg.d_model**-0.5),
                name="lm_head",
            )

    def encode(self, input_features, attention_mask=None, deterministic=True):
        """-> (hidden [batch, src, d_model], mask [batch, src] bool)."""
        return self.encoder(input_features, attention_mask, deterministic)

    def logits(self, hidden):
        """Decoder hidden [..., d_model] -> float32 logits [..., vocab]."""
        if self.config.tie_word_embeddings:
            out = self.decoder.embed_tokens.attend(hidden)
        else:
            out = self.lm_head(hidden)
        return out.astype(jnp.float32)

    def decode(
        self,
        decoder_input_ids,
        enc,
        enc_mask,
        decoder_attention_mask=None,
        deterministic=True,
    ):
        """Teacher-forced: [batch, tgt] ids -> logits [batch, tgt, vocab] (hidden without head)."""
        h = self.decoder(decoder_input_ids, enc, enc_mask, decoder_attention_mask, deterministic)
        return self.logits(h) if self.with_lm_head else h

    def init_cache(self, enc, enc_mask, beams: int, length: int):
        """The decoder cache for a search of `beams` rows per item (see kv_cache.py)."""
        return self.decoder.init_cache(enc, enc_mask, beams, length)

    def decode_step(self, tokens, index, cache, max_length: int):
        """tokens [batch * beams] at step `index` -> (logits [batch * beams, vocab] f32, cache)."""
        h, cache = self.decoder.step(tokens, index, cache, max_length)
        return self.logits(h), cache

    def __call__(
        self,
        input_features,
        attention_mask=None,
        decoder_input_ids=None,
        decoder_attention_mask=None,
        deterministic=True,
    ):
        """-> (logits or decoder hidden [batch, tgt, ...], encoder hidden, encoder mask)."""
        enc, enc_mask = self.encode(input_features, attention_mask, deterministic)
        # As transformers does: without a frame mask there is no cross-attention mask either.
        cross_mask = None if attention_mask is None else enc_mask
        out = self.decode(decoder_input_ids, enc, cross_mask, decoder_attention_mask, deterministic)
        return out, enc, enc_mask
