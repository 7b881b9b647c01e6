"""The one mesh helper: axis sizes, which devices, and which rows of a batch a process holds.
(One process here, with the 8 CPU devices of tests/conftest.py; tests/training/test_multihost.py
checks the rows of two processes.)"""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from s2t_jax.parallel.mesh import (
    MESH_AXES,
    make_mesh,
    mesh_shape,
    process_row_block,
    process_row_indices,
    process_rows,
    select_devices,
)


def test_sizes_fill_the_rest_in_axis_order():
    assert mesh_shape({"data": -1, "fsdp": 2}, 8) == (4, 2, 1)
    assert mesh_shape({"tensor": 2, "data": 4}, 8) == (4, 1, 2)
    for sizes, message in (
        ({"data": 3, "fsdp": 2}, "needs 6 devices"),
        ({"model": 2}, "unknown axes"),
        ({"data": -1, "fsdp": -1}, "at most one axis"),
        ({"data": -1, "fsdp": 3}, "not a multiple of 3"),
    ):
        with pytest.raises(ValueError, match=message):
            mesh_shape(sizes, 8)


def test_default_mesh_is_data_parallel_over_every_device_in_process_order():
    mesh = make_mesh()
    assert mesh.axis_names == MESH_AXES
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}
    assert list(mesh.devices.flat) == sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    assert dict(make_mesh({"data": 2, "fsdp": -1}).shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert make_mesh(None, 4).size == 4


def test_device_choice():
    local = jax.local_devices()
    assert select_devices(3) == local[:3]
    assert select_devices(0) == select_devices(None) == local
    assert select_devices(local[5:7], local=True) == local[5:7]
    with pytest.raises(ValueError, match="9.*8 local devices"):
        select_devices(9, local=True)
    with pytest.raises(ValueError, match="empty"):
        select_devices([])


def test_rows_of_this_process():
    mesh = make_mesh({"data": 4}, 4)
    rows = NamedSharding(mesh, P("data"))
    np.testing.assert_array_equal(process_row_indices(rows, 8), np.arange(8))
    assert process_row_block(rows, 8) == slice(0, 8)
    x = jax.device_put(np.arange(24, dtype=np.float32).reshape(8, 3), rows)
    replicated = jax.device_put(np.asarray(x), NamedSharding(mesh, P()))
    for array in (x, replicated):
        np.testing.assert_array_equal(process_rows(array, rows), np.asarray(x))
