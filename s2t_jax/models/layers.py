"""Small building blocks shared by the encoder and decoder: activations, dtypes, initialisers."""

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

from s2t_jax.models.positions import sinusoidal_positions

ACTIVATIONS = {
    "relu": jax.nn.relu,
    # transformers' "gelu" is the exact erf form; "gelu_new"/"gelu_pytorch_tanh" the tanh one.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# fairseq initialises the Transformer's projections with Xavier-uniform; we do the same so that
# training from scratch follows fairseq's recipe. Loaded checkpoints overwrite all of this.
dense_init = nn.initializers.xavier_uniform()


def dtypes(config):
    """(compute dtype, param dtype) for a config."""
    return DTYPES[config.dtype], DTYPES[config.param_dtype]


def layer_norm(config, name):
    dtype, param_dtype = dtypes(config)
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, param_dtype=param_dtype, name=name)


def dense(config, features, name, use_bias=True):
    dtype, param_dtype = dtypes(config)
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=dense_init,
        name=name,
    )


class TokenEmbedding(nn.Module):
    """Token embeddings scaled by sqrt(d_model) (unless `scale_embedding` is off) plus
    sinusoidal positions counted over non-pad tokens: the input of the speech decoder and of
    the language model, whose configs name the fields alike. `attend` is the tied output
    projection. The table is this module's `embedding` param, as nn.Embed names it, so
    checkpoints keep `embed_tokens/embedding`."""

    config: object

    def setup(self):
        cfg = self.config
        self.dtype, param_dtype = dtypes(cfg)
        self.embedding = self.param(
            "embedding",
            nn.initializers.normal(cfg.d_model**-0.5),
            (cfg.vocab_size, cfg.d_model),
            param_dtype,
        )
        self.scale = math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0

    def __call__(self, ids, offset=0, max_position=None):
        """ids [batch, len] -> [batch, len, d_model]; `offset` tokens came before (a cached
        step), `max_position` bounds the position table."""
        cfg = self.config
        table = jnp.asarray(self.embedding, self.dtype)
        x = jnp.take(table, ids, axis=0) * self.scale  # [batch, len, d_model]
        pos = sinusoidal_positions(
            ids != cfg.pad_token_id, cfg.d_model, cfg.pad_token_id, offset, max_position
        )
        return x + pos.astype(x.dtype)

    def attend(self, x):
        """x [..., d_model] -> [..., vocab]: the tied output projection."""
        x, table = x.astype(self.dtype), jnp.asarray(self.embedding, self.dtype)
        return jnp.dot(x, table.T)


class FeedForward(nn.Module):
    """fc1 -> activation -> dropout -> fc2, as in fairseq's and transformers' layers."""

    config: object
    ffn_dim: int

    def setup(self):
        self.fc1 = dense(self.config, self.ffn_dim, "fc1")
        self.fc2 = dense(self.config, self.config.d_model, "fc2")
        self.activation_dropout = nn.Dropout(self.config.activation_dropout)

    def __call__(self, x, deterministic: bool):
        h = ACTIVATIONS[self.config.activation_function](self.fc1(x))  # [batch, len, ffn]
        h = self.activation_dropout(h, deterministic=deterministic)
        return self.fc2(h)  # [batch, len, d_model]
