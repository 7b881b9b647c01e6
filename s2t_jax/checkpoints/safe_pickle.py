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


def _rebuild_tensor(storage, offset, size, stride, *unused):
    """torch._utils._rebuild_tensor_v2 in numpy: a strided view into a storage, copied."""
    item = storage.itemsize
    if not size:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
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
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(raw, dtype=storage_type.dtype)


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
