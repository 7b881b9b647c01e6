"""The one device mesh helper, and which rows of a batch each process holds.

Training, `generate` and evaluation all lay devices out with `make_mesh`, over the same axes:
  * data   - data parallelism: the batch is split, params are replicated;
  * fsdp   - data parallelism that also shards params, gradients and optimiser state;
  * tensor - Megatron-style splits of heads / MLP / vocab (unused by S2T sizes).
Decoding uses only `data` (each device runs its own search on its rows); training's layout of
the state over the axes is the rules table in s2t_jax/training/sharding.py.

Devices are ordered process-major, so each process's devices hold one contiguous block of a
batch's rows: the rows its loader reads. `process_row_indices` says which rows those are, and
`process_rows` reads them back from a global array.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(sizes, num_devices: int) -> tuple[int, ...]:
    """{'data': -1, 'fsdp': 2} + 8 devices -> (4, 2, 1), in MESH_AXES order."""
    cfg = dict(sizes or {})
    unknown = set(cfg) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"mesh: unknown axes {sorted(unknown)}; known: {MESH_AXES}")
    shape = [int(cfg.get(a, 1)) for a in MESH_AXES]
    if shape.count(-1) > 1:
        raise ValueError(f"mesh={cfg}: at most one axis may be -1")
    fixed = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % fixed:
            raise ValueError(f"mesh={cfg}: {num_devices} devices are not a multiple of {fixed}")
        shape[shape.index(-1)] = num_devices // fixed
    if math.prod(shape) != num_devices:
        raise ValueError(f"mesh={cfg} needs {math.prod(shape)} devices, have {num_devices}")
    return tuple(shape)


def select_devices(devices=None, *, local: bool = False) -> list:
    """Devices in process-major order: None for all, a count for the first n, or a list.

    `local=True` chooses among this process's devices only (a per-process search, as
    `generate` runs); otherwise among every device of every process, where a count <= 0 also
    means all, and with several processes a count must take them all (each process holds its
    own rows of a batch).
    """
    pool = jax.local_devices() if local else jax.devices()
    pool = sorted(pool, key=lambda d: (d.process_index, d.id))
    if devices is None or (not local and isinstance(devices, (int, np.integer)) and devices <= 0):
        return pool
    if isinstance(devices, (int, np.integer)):
        if not 1 <= devices <= len(pool):
            where = "local " if local else ""
            raise ValueError(f"devices={devices}, but only {len(pool)} {where}devices exist")
        if not local and jax.process_count() > 1 and devices != len(pool):
            raise ValueError("with several processes, a mesh must use every device")
        return pool[: int(devices)]
    chosen = list(devices)
    if not chosen:
        raise ValueError("devices is an empty list")
    return chosen


def make_mesh(
    sizes=None, devices=None, *, local: bool = False, physical_layout: bool = False
) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (see select_devices).

    sizes: {axis: size}, one of them -1 for "the rest"; default {"data": -1}, pure data
    parallelism. Devices keep their process-major order, so a process's devices hold one
    contiguous block of rows (what decoding and evaluation rely on). `physical_layout=True`
    (training) lets mesh_utils lay the axes along the interconnect instead, on TPU/GPU with
    every device in use, where collectives over fsdp/tensor pay for the hops.
    """
    chosen = select_devices(devices, local=local)
    shape = mesh_shape(sizes if sizes is not None else {"data": -1}, len(chosen))
    array = None
    physical = physical_layout and chosen[0].platform in ("tpu", "gpu")
    if physical and len(chosen) == jax.device_count() > 1:
        try:
            from jax.experimental import mesh_utils

            array = mesh_utils.create_device_mesh(shape, chosen)
        except (ValueError, NotImplementedError, AssertionError) as e:
            logging.warning("mesh_utils could not lay out %s (%s); using device order", shape, e)
    if array is None:
        array = np.asarray(chosen).reshape(shape)
    return Mesh(array, MESH_AXES)


def process_row_indices(sharding: NamedSharding, num_rows: int) -> np.ndarray:
    """Global rows of a [num_rows, ...] batch that this process's devices hold, ascending.

    `jax.make_array_from_process_local_data` places a process's local rows at exactly these
    positions, in this order; `process_rows` reads them back.
    """
    rows = set()
    for index in sharding.addressable_devices_indices_map((num_rows,)).values():
        start, stop, _ = index[0].indices(num_rows)
        rows.update(range(start, stop))
    return np.asarray(sorted(rows), np.int64)


def process_row_block(sharding: NamedSharding, num_rows: int) -> slice:
    """`process_row_indices` as one slice; raises if the rows are not one contiguous block."""
    rows = process_row_indices(sharding, num_rows)
    if len(rows) == 0 or rows[-1] - rows[0] + 1 != len(rows):
        raise ValueError("this process's devices do not hold a contiguous block of rows")
    return slice(int(rows[0]), int(rows[-1]) + 1)


def process_rows(x: jax.Array, sharding: NamedSharding) -> np.ndarray:
    """This process's rows of a global array, as fed in through `sharding` (host numpy).

    Works whatever the array's own sharding (rows sharded or replicated): each wanted row is
    copied from an addressable shard that holds it. Only this process's devices are read.
    """
    want = process_row_indices(sharding, x.shape[0])
    if x.is_fully_addressable:
        return np.asarray(jax.device_get(x))[want]
    out = np.empty((len(want), *x.shape[1:]), x.dtype)
    filled = np.zeros(len(want), bool)
    for shard in x.addressable_shards:
        start, stop, _ = shard.index[0].indices(x.shape[0])
        lo, hi = np.searchsorted(want, [start, stop])
        todo = np.arange(lo, hi)[~filled[lo:hi]]
        if len(todo):
            data = np.asarray(shard.data)
            out[todo] = data[want[todo] - start]
            filled[todo] = True
    if not filled.all():
        raise ValueError("this process's devices do not hold all of its rows of the array")
    return out
