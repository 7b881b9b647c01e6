"""transformers-shaped outputs of the user classes (modeling.py) and their decoder cache.

An output is read the ways transformers allows: by attribute (`out.logits`), by key
(`out["logits"]`), by position (`out[0]`, counting only the fields that are set, in the declared
order) and as `out.to_tuple()`; `return_dict=False` returns that tuple. The field order is
transformers' own, so positional code written against transformers reads the same fields here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp


class ModelOutput:
    """A dataclass whose set (non-None) fields behave as an ordered mapping and a tuple."""

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def get(self, key: str, default=None):
        return getattr(self, _current_name(key), default)

    def __getitem__(self, key):
        if isinstance(key, str):
            key = _current_name(key)
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key) -> bool:
        return _current_name(key) in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    @property
    def past_key_values(self):
        """transformers' older name for `cache`."""
        return getattr(self, "cache", None)


def _current_name(key: str) -> str:
    return "cache" if key == "past_key_values" else key


@dataclasses.dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None


@dataclasses.dataclass
class BaseModelOutputWithPastAndCrossAttentions(ModelOutput):
    last_hidden_state: Any = None
    cache: Any = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    cross_attentions: tuple | None = None


@dataclasses.dataclass
class Seq2SeqModelOutput(ModelOutput):
    """Speech2TextModel's output. `encoder_attention_mask` (ours: the subsampled frame mask,
    [batch, src] bool) is an attribute only, not a field, so positions stay transformers'."""

    last_hidden_state: Any = None
    cache: Any = None
    decoder_hidden_states: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: tuple | None = None
    encoder_attentions: tuple | None = None
    encoder_attention_mask: Any = dataclasses.field(default=None, repr=False, compare=False)
    logits = None  # the base model has no LM head

    def keys(self) -> list[str]:
        return [k for k in super().keys() if k != "encoder_attention_mask"]


@dataclasses.dataclass
class Seq2SeqLMOutput(ModelOutput):
    """Speech2TextForConditionalGeneration's output (see Seq2SeqModelOutput for the mask)."""

    loss: Any = None
    logits: Any = None
    cache: Any = None
    decoder_hidden_states: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: tuple | None = None
    encoder_attentions: tuple | None = None
    encoder_attention_mask: Any = dataclasses.field(default=None, repr=False, compare=False)

    def keys(self) -> list[str]:
        return [k for k in super().keys() if k != "encoder_attention_mask"]


class DecoderCache(tuple):
    """The decoder's K/V in transformers' legacy layout: one tuple per layer of
    (self_k, self_v, cross_k, cross_v), each [batch, heads, len, head_dim] (len: the tokens seen
    for self-attention, the encoder frames for cross-attention). Pass it back as
    `past_key_values` to decode the next tokens without recomputing these."""

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self[layer_idx][0].shape[2]) if len(self) else 0

    def to_legacy_cache(self) -> tuple:
        return tuple(self)


@dataclasses.dataclass(frozen=True)
class Embedding:
    """A token embedding (or LM head) as transformers hands it out: `weight` [vocab, d_model]."""

    weight: jax.Array

    @property
    def num_embeddings(self) -> int:
        return int(self.weight.shape[0])

    @property
    def embedding_dim(self) -> int:
        return int(self.weight.shape[1])

    def __call__(self, ids):
        return jnp.take(self.weight, jnp.asarray(ids), axis=0)
