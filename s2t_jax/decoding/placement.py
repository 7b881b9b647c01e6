"""Where a search runs: the mesh generate() splits rows over, and params placed on it.

Each device runs its own search on its block of rows, with no communication at all (its while
loop stops when its own rows are done); params are replicated, one copy per device, kept
between calls.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from s2t_jax.parallel.mesh import make_mesh, select_devices

ROWS, SAME = P("data"), P()  # split by rows over the mesh; the same on every device


def generation_mesh(devices, rows: int) -> Mesh | None:
    """The mesh whose "data" axis generate() splits `rows` rows over, or None for one device.

    devices: None for every local device, a count for the first n of them, or a list. No more
    devices than rows are used, so each holds at least one real row. Why split: a decoder
    step is a few hundred small operations bound by memory bandwidth, which XLA runs one after
    another on one thread; devices run their searches side by side (on a CPU host, see
    host_devices.use_cpu_cores for one device per core).
    """
    chosen = select_devices(devices, local=True)[: max(1, int(rows))]
    return make_mesh(None, chosen) if len(chosen) > 1 else None


def mesh_size(mesh: Mesh | None) -> int:
    return 1 if mesh is None else mesh.size


def round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


def split_over(mesh: Mesh | None, fn, in_specs, out_specs):
    """jit(fn), or with a mesh, jit of fn run on each device's block of rows (specs as
    shard_map's). Each device runs its own search on its rows, with no communication at all:
    its while loop stops when its own rows are done.
    """
    if mesh is None:
        return jax.jit(fn)
    # check_vma off: the search's loop carries mix replicated (step counter) and per-device
    # (sequences) values, which is exactly what running one search per device means.
    mapped = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    return jax.jit(mapped)


_ON_DEVICE: dict = {}  # device -> (params, their copy on that device)
# mesh -> (params, their replicated arrays over the mesh): assembling ~360 arrays from the
# devices' copies costs ~8 ms, too much to redo on every call.
_ON_MESH: dict = {}


def replicated(params, mesh: Mesh):
    """params as arrays replicated over `mesh`. Each device gets one copy per params object,
    shared by every mesh it is in (calls with fewer rows use fewer devices), not per call."""
    hit = _ON_MESH.get(mesh)
    devices = list(mesh.devices.flat)
    if hit is not None and hit[0] is params:
        # Still the devices' current copies (another params object may have replaced them,
        # and then this mesh's arrays would hold a second copy).
        if all(_ON_DEVICE.get(d, (None,))[0] is params for d in devices):
            return hit[1]
    leaves, tree = jax.tree.flatten(params)
    copies = []
    for device in devices:
        on = _ON_DEVICE.get(device)
        if on is None or on[0] is not params:
            on = (params, jax.tree.leaves(jax.device_put(params, device)))
            _ON_DEVICE[device] = on
        copies.append(on[1])
    same = NamedSharding(mesh, SAME)
    arrays = [
        jax.make_array_from_single_device_arrays(np.shape(leaf), same, [c[i] for c in copies])
        for i, leaf in enumerate(leaves)
    ]
    out = jax.tree.unflatten(tree, arrays)
    _ON_MESH[mesh] = (params, out)
    return out


def on_mesh(mesh: Mesh | None, params, *rows):
    """(params, *rows) placed for a search split over `mesh`: params replicated (see
    replicated), row arrays split by rows."""
    if mesh is None:
        return (params, *rows)
    split = NamedSharding(mesh, ROWS)
    return (replicated(params, mesh), *(jax.device_put(x, split) for x in rows))
