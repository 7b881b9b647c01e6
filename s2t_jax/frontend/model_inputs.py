"""The dicts of model inputs that the extractor, tokenizer and processor return.

Why dict subclasses: they are what transformers returns, so `batch["input_features"]`,
`batch.input_features`, `batch.data` and `model(**batch)` all work as users expect.
`return_tensors` (or `tensor_type=` at construction) turns their lists into one array per key:
numpy (`"np"`) or `jax.Array` (`"jax"`). Values that are not numbers (strings, dicts) stay as
they are, as in transformers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BatchEncoding", "BatchFeature"]

TENSOR_TYPES = ("np", "jax")


def _tensor_type(tensor_type) -> str | None:
    if tensor_type is None:
        return None
    tensor_type = str(getattr(tensor_type, "value", tensor_type))
    if tensor_type not in TENSOR_TYPES:
        raise ValueError(f"return_tensors must be None, 'np' or 'jax', got {tensor_type!r}")
    return tensor_type


def _is_numeric(value) -> bool:
    """Arrays and (nested) lists whose first leaf is a number: the values worth converting."""
    while isinstance(value, (list, tuple)):
        if not value:
            return True
        value = value[0]
    return isinstance(value, (int, float, np.number, np.ndarray)) or hasattr(value, "__array__")


class BatchFeature(dict):
    """A dict of model inputs with attribute access (`batch.input_features`)."""

    def __init__(self, data=None, tensor_type=None):
        super().__init__(data or {})
        self.convert_to_tensors(tensor_type)

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    @property
    def data(self) -> dict:
        """The dict itself (transformers' `BatchFeature.data`)."""
        return self

    def convert_to_tensors(self, tensor_type=None) -> BatchFeature:
        """Make every numeric value one array: `"np"` for numpy, `"jax"` for jax.Array."""
        tensor_type = _tensor_type(tensor_type)
        if tensor_type is None:
            return self
        for key, value in self.items():
            if not _is_numeric(value):
                continue
            array = self._as_array(key, value, tensor_type)
            if tensor_type == "jax":
                import jax.numpy as jnp

                array = jnp.asarray(array)
            self[key] = array
        return self

    def _as_array(self, key: str, value, tensor_type: str) -> np.ndarray:
        """Per-utterance arrays (or an array already) -> one stacked array. Items of different
        lengths give numpy's 1-D object array of per-item arrays, as transformers does; jax has
        no such array, so there they are a ValueError."""
        if isinstance(value, np.ndarray) or not isinstance(value, (list, tuple)):
            return np.asarray(value)
        try:
            return np.stack([np.asarray(v) for v in value]) if value else np.asarray(value)
        except ValueError as err:
            if tensor_type == "np":
                ragged = np.empty(len(value), dtype=object)
                ragged[:] = [np.asarray(v) for v in value]
                return ragged
            raise ValueError(
                f"Unable to stack '{key}' into one tensor: its items have different lengths. "
                "Use padding=True, or return_tensors=None for a list of arrays."
            ) from err


class BatchEncoding(BatchFeature):
    """Tokenizer output: `input_ids`, `attention_mask`, ..., with attribute access."""

    def __init__(self, data=None, tensor_type=None, prepend_batch_axis: bool = False):
        dict.__init__(self, data or {})
        self.convert_to_tensors(tensor_type, prepend_batch_axis)

    def convert_to_tensors(self, tensor_type=None, prepend_batch_axis: bool = False):
        """As BatchFeature's; `prepend_batch_axis` makes one sequence a batch of one."""
        if prepend_batch_axis and _tensor_type(tensor_type) is not None:
            for key, value in self.items():
                if _is_numeric(value):
                    self[key] = [value]
        return super().convert_to_tensors(tensor_type)

    def _as_array(self, key: str, value, tensor_type: str) -> np.ndarray:
        """Lists of ids -> int64 [batch, length] (transformers' dtype)."""
        try:
            return np.asarray(value, dtype=np.int64)
        except ValueError as err:
            raise ValueError(
                f"Unable to make '{key}' one tensor: sequences have different lengths. "
                "Use padding=True."
            ) from err
