"""The dicts of model inputs that the extractor, tokenizer and processor return.

Why dict subclasses: they are what transformers returns, so `batch["input_features"]`,
`batch.input_features` and `model(**batch)` all work as users expect. `return_tensors` turns
their lists into one array per key: numpy (`"np"`) or `jax.Array` (`"jax"`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BatchEncoding", "BatchFeature"]


class BatchFeature(dict):
    """A dict of model inputs with attribute access (`batch.input_features`)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    def convert_to_tensors(self, tensor_type: str | None = None) -> BatchFeature:
        """Make every value one array: `"np"` for numpy, `"jax"` for jax.Array."""
        if tensor_type is None:
            return self
        tensor_type = str(getattr(tensor_type, "value", tensor_type))
        if tensor_type not in ("np", "jax"):
            raise ValueError(f"return_tensors must be None, 'np' or 'jax', got {tensor_type!r}")
        for key, value in self.items():
            array = self._as_array(key, value)
            if tensor_type == "jax":
                import jax.numpy as jnp

                array = jnp.asarray(array)
            self[key] = array
        return self

    def _as_array(self, key: str, value) -> np.ndarray:
        """Per-utterance arrays (or an array already) -> one stacked array."""
        try:
            return value if isinstance(value, np.ndarray) else np.stack(value)
        except ValueError as err:
            raise ValueError(
                f"Unable to stack '{key}' into one tensor: its items have different lengths. "
                "Use padding=True, or return_tensors=None for a list of arrays."
            ) from err


class BatchEncoding(BatchFeature):
    """Tokenizer output: `input_ids` and `attention_mask`, with attribute access."""

    def _as_array(self, key: str, value) -> np.ndarray:
        """Lists of ids -> int64 [batch, length] (transformers' dtype)."""
        try:
            return np.asarray(value, dtype=np.int64)
        except ValueError as err:
            raise ValueError(
                f"Unable to make '{key}' one tensor: sequences have different lengths. "
                "Use padding=True."
            ) from err
