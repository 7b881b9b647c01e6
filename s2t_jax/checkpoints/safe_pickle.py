"""Read PyTorch `.bin` / `.pt` checkpoints without torch and without running code from them.

A torch checkpoint is a zip holding `data.pkl` plus one raw file per tensor storage. A pickle can
name any Python callable and have the loader call it, which is how crafted checkpoints run code.
Here the unpickler resolves only an explicit allowlist: tensor rebuilding (reimplemented in numpy),
storage dtypes, OrderedDict, argparse.Namespace (fairseq's `args`) and numpy scalars. Any other
global is refused before anything is called, so a payload never runs. Tensors come back as
numpy arrays. This is torch's `weights_only=True` idea, without needing torch at run time.

fairseq's averaged and re-saved checkpoints hold their `cfg` as pickled omegaconf objects
(DictConfig, ListConfig, value nodes, their metadata, `typing.Any`, builtin types as metadata
values). omegaconf's classes are never imported: each resolves to an inert stand-in of ours that
only records the state pickle hands it, and after loading the stand-ins are turned into plain
dicts, lists and values. Type objects named in that metadata resolve to marker strings, so the
file cannot call `dict`, `list` or anything else through them.
"""

import argparse
import collections
import io
import os
import pickle
import pickletools
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


class _Recorded:
    """An omegaconf object's stand-in: `NEWOBJ` makes it with no arguments, `BUILD` hands it the
    state pickle saved (omegaconf's `__getstate__` dict), and nothing else runs."""

    def __init__(self, *unused):
        self.state = None

    def __setstate__(self, state):
        self.state = state


class _OmegaContainer(_Recorded):
    """DictConfig / ListConfig: the content is in `_content` (None, a "???" / "${...}" string,
    a dict of nodes or a list of nodes)."""


class _OmegaNode(_Recorded):
    """A value node (AnyNode, StringNode, ...): the value is in `_val`."""


class _OmegaMetadata(_Recorded):
    """Metadata / ContainerMetadata: types and flags, dropped when converting."""


def _type_marker(name):
    return f"<type {name}>"


def _plain_default_dict(*unused):
    """collections.defaultdict(factory), where the factory is a marker: a plain dict."""
    return {}


def _state_get(obj: _Recorded, key: str):
    state = getattr(obj, "state", None)
    if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
        state = state[0]
    return state.get(key) if isinstance(state, dict) else None


def plain_data(obj, _depth: int = 0):
    """Omegaconf stand-ins (at any depth of dicts, lists, tuples, Namespaces) -> dicts, lists and
    values; everything else unchanged."""
    if _depth > 200:
        raise UnsafeCheckpointError("config objects nested more than 200 deep")
    deeper = _depth + 1
    if isinstance(obj, _OmegaContainer):
        content = _state_get(obj, "_content")
        if isinstance(content, dict):
            return {k: plain_data(v, deeper) for k, v in content.items()}
        if isinstance(content, (list, tuple)):
            return [plain_data(v, deeper) for v in content]
        return content  # None, or "???" / an interpolation string
    if isinstance(obj, _OmegaNode):
        return plain_data(_state_get(obj, "_val"), deeper)
    if isinstance(obj, _OmegaMetadata):
        return None
    if isinstance(obj, argparse.Namespace):
        return argparse.Namespace(**{k: plain_data(v, deeper) for k, v in vars(obj).items()})
    if isinstance(obj, dict):
        if any(isinstance(v, _Recorded) or _holds_config(v) for v in obj.values()):
            return type(obj)((k, plain_data(v, deeper)) for k, v in obj.items())
        return obj
    if isinstance(obj, (list, tuple)) and any(
        isinstance(v, _Recorded) or _holds_config(v) for v in obj
    ):
        return type(obj)(plain_data(v, deeper) for v in obj)
    return obj


def _holds_config(value) -> bool:
    """Whether a value may hold stand-ins below it (tensors and scalars never do)."""
    return isinstance(value, (dict, list, tuple, argparse.Namespace))


_OMEGACONF = {
    **{f"omegaconf.{m}.{c}": _OmegaContainer for m in ("dictconfig", "listconfig")
       for c in ("DictConfig", "ListConfig")},
    **{f"omegaconf.nodes.{c}": _OmegaNode for c in (
        "AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode",
        "BytesNode", "PathNode", "ValueNode", "InterpolationResultNode")},
    "omegaconf.base.Metadata": _OmegaMetadata,
    "omegaconf.base.ContainerMetadata": _OmegaMetadata,
    "typing.Any": _type_marker("Any"),
    "collections.defaultdict": _plain_default_dict,
    # Builtin types appear as metadata values (ref_type=dict, key_type=int); as markers they
    # cannot be called. Protocol-2 pickles spell the module `__builtin__` and int `long`.
    **{f"{m}.{n}": _type_marker(n) for m in ("builtins", "__builtin__")
       for n in ("dict", "list", "int", "long", "str", "float", "bool", "tuple", "object")},
}  # fmt: skip


_ALLOWED = {
    **_OMEGACONF,
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
            "objects (tensors, dicts, argparse.Namespace, omegaconf configs). The file may be "
            "malicious, or hold objects this loader does not support."
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


_MEMO_OPS = {"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}


def _check_opcodes(stream: bytes, path: str) -> None:
    """Reads the pickle's opcodes without running them, before the real unpickler does.

    Python's C unpickler sizes its memo by the largest index a PUT names, so a damaged index
    (LONG_BINPUT 1175087203) makes it allocate gigabytes before it fails. A pickle that
    torch wrote numbers its memo entries from 0 as it goes, so an index is bounded by the
    number of opcodes; anything above that, an unknown opcode or a missing STOP is refused.
    """
    count = 0
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            count += 1
            if opcode.name in _MEMO_OPS and isinstance(arg, int) and not 0 <= arg <= count:
                raise ValueError(f"memo index {arg} at opcode {count}")
    except ValueError as e:
        raise UnsafeCheckpointError(f"{path}: damaged checkpoint pickle ({e})") from e


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
    try:
        with zipfile.ZipFile(path) as archive:
            pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not pkls:
                raise ValueError(f"{path}: zip file has no data.pkl; not a torch checkpoint")
            prefix = pkls[0][: -len("/data.pkl")] if "/" in pkls[0] else ""
            stream = archive.read(pkls[0])
            _check_opcodes(stream, path)
            unpickler = _Unpickler(io.BytesIO(stream), archive, prefix, path)
            return plain_data(unpickler.load())
    except (UnsafeCheckpointError, ValueError) as e:
        if path in str(e):
            raise
        raise UnsafeCheckpointError(f"{path}: damaged checkpoint ({e})") from e
    except RecursionError as e:
        raise UnsafeCheckpointError(f"{path}: damaged checkpoint (nesting too deep)") from e
    except Exception as e:  # noqa: BLE001 - a damaged pickle or zip fails in many ways
        # zipfile.BadZipFile, EOFError, and what the allowed callables raise on wrong
        # arguments (TypeError, AttributeError, OverflowError, ...): all mean a damaged file.
        raise UnsafeCheckpointError(f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from e
