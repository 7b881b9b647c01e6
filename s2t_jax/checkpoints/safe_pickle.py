"""Read PyTorch `.bin` / `.pt` checkpoints without torch and without running code from them.

A torch checkpoint is a zip holding `data.pkl` plus one raw file per tensor storage. A pickle can
name any Python callable and have the loader call it, which is how crafted checkpoints run code.
Here the unpickler resolves only an explicit allowlist: tensor rebuilding (reimplemented in numpy),
storage dtypes, OrderedDict, argparse.Namespace (fairseq's `args`) and numpy scalars. Any other
global is refused before anything is called, so a payload never runs. Tensors come back as
numpy arrays. This is torch's `weights_only=True` idea, without needing torch at run time.
"""

import argparse
import collections
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint names a Python object outside the allowlist."""


class _StorageType:
    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


class _Storage:
    """A storage record's values, with what error messages need to name it."""

    def __init__(self, values: np.ndarray, path: str, key: str):
        self.values, self.path, self.key = values, path, key


def _whole_numbers(value, what: str, storage: _Storage) -> tuple[int, ...]:
    items = value if isinstance(value, (tuple, list)) else None
    if items is None or not all(type(v) is int for v in items):
        raise UnsafeCheckpointError(
            f"{storage.path}: tensor record of storage {storage.key}: {what} must be a tuple of "
            f"integers, got {value!r}"
        )
    return tuple(items)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """torch._utils._rebuild_tensor_v2 in numpy: a strided view into a storage, copied.

    The record's offset, shape and strides come from the file, so they are checked against the
    storage's real length before anything is viewed: a view past its end would read (or, with
    a huge stride, crash on) this process's memory. Negative strides and tensors with more
    elements than their storage (torch's expanded views, which checkpoints do not hold) are
    refused too.
    """
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError(f"tensor record without a storage: {storage!r}")
    size = _whole_numbers(size, "its shape", storage)
    stride = _whole_numbers(stride, "its strides", storage)
    length = storage.values.shape[0]
    record = f"offset {offset!r}, shape {size}, strides {stride}"
    bad = None
    if type(offset) is not int or offset < 0:
        bad = "the offset must be a non-negative integer"
    elif len(size) != len(stride):
        bad = "shape and strides differ in length"
    elif any(n < 0 for n in size) or any(s < 0 for s in stride):
        bad = "sizes and strides must be >= 0"
    elif 0 in size:
        bad = None if offset <= length else "the offset is past the end of the storage"
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= length:
            bad = f"it reaches element {last} of a storage of {length}"
        elif int(np.prod(size, dtype=np.float64)) > length:
            bad = f"it has more elements than its storage of {length}"
    if bad is not None:
        raise UnsafeCheckpointError(
            f"{storage.path}: tensor record of storage {storage.key} ({record}) is out of "
            f"bounds: {bad}"
        )
    values = storage.values
    if not size:
        return values[offset].copy()
    view = np.lib.stride_tricks.as_strided(
        values[offset:], shape=size, strides=tuple(s * values.itemsize for s in stride)
    )
    return np.ascontiguousarray(view)


def _rebuild_parameter(data, *unused):
    return data


def _numpy_scalar(dtype, data=None):
    return np.frombuffer(data, dtype=dtype)[0] if data is not None else dtype.type()


def _numpy_dtype(name, *unused):
    return np.dtype(name)


_ALLOWED = {
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "collections.OrderedDict": collections.OrderedDict,
    "argparse.Namespace": argparse.Namespace,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "numpy.core.multiarray.scalar": _numpy_scalar,
    "numpy._core.multiarray.scalar": _numpy_scalar,
    "numpy.dtype": _numpy_dtype,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._path = path

    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        key = f"{module}.{name}"
        if key in _ALLOWED:
            return _ALLOWED[key]
        raise UnsafeCheckpointError(
            f"{self._path}: refusing to load '{key}': it is not in the allowlist of safe "
            "objects (tensors, dicts, argparse.Namespace). The file may be malicious, or hold "
            "objects this loader does not support."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"{self._path}: unsupported persistent id {pid!r}")
        _, storage_type, key, _location, _numel = pid
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"{self._path}: bad storage type {storage_type!r}")
        name = f"{self._prefix}/data/{key}"
        try:
            raw = self._archive.read(name)
        except KeyError:
            raise UnsafeCheckpointError(
                f"{self._path}: the pickle names storage record {name}, which the file lacks"
            ) from None
        if len(raw) % storage_type.dtype.itemsize:
            raise UnsafeCheckpointError(
                f"{self._path}: storage record {name} holds {len(raw)} bytes, not a whole "
                f"number of {storage_type.dtype} values"
            )
        return _Storage(np.frombuffer(raw, dtype=storage_type.dtype), self._path, str(key))


def load_torch_checkpoint(path: str | os.PathLike):
    """Loads a torch.save zip file into plain Python containers holding numpy arrays."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: not a torch zip checkpoint (legacy pre-1.6 torch files are not supported; "
            "re-save it with a recent torch, or convert it to safetensors)"
        )
    with zipfile.ZipFile(path) as archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkls:
            raise ValueError(f"{path}: zip file has no data.pkl; not a torch checkpoint")
        prefix = pkls[0][: -len("/data.pkl")] if "/" in pkls[0] else ""
        with archive.open(pkls[0]) as f:
            return _Unpickler(f, archive, prefix, path).load()
