"""`make_generate_fn` over a mesh of every device of every process, for batch evaluation.

Params are replicated, the rows of each global batch are split over the devices, and each
device runs its own search on its rows (no communication per step). Each distinct (forced BOS,
input shape) is lowered and compiled ahead of its first call, so compile time is measured
apart from decoding (results.json reports both).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from s2t_jax.decoding.search import make_generate_fn
from s2t_jax.decoding.settings import GenerationSettings
from s2t_jax.parallel.hosts import gather_rows
from s2t_jax.parallel.mesh import make_mesh, process_row_block


class ShardedGenerator:
    """`make_generate_fn` over a ("data",) mesh: params replicated, batch rows sharded, and
    each device searching its own rows (no communication per step).

    Each distinct (forced BOS, input shape) is lowered and compiled ahead of its first call, so
    compile time is measured apart from decoding.
    """

    def __init__(self, model, settings: GenerationSettings, num_devices: int = 0):
        self.mesh = make_mesh(None, num_devices)  # every device's "data" rows
        self.num_devices = self.mesh.size
        self.row_sharding = NamedSharding(self.mesh, P("data"))
        self.params = jax.device_put(model.variables, NamedSharding(self.mesh, P()))
        self.config, self.settings = model.config, settings
        self._fns: dict = {}  # forced BOS -> jitted generate fn
        self._compiled: dict = {}  # (forced BOS, shape) -> compiled executable
        self.compile_seconds = 0.0

    @property
    def shapes(self) -> list[tuple]:
        return sorted({shape for _, shape in self._compiled})

    def round_batch(self, batch_size: int) -> int:
        """A global batch holds a multiple of the device count."""
        return -(-max(int(batch_size), 1) // self.num_devices) * self.num_devices

    def local_rows(self, batch_size: int) -> slice:
        """This process's rows of a global batch: the shards of its devices."""
        return process_row_block(self.row_sharding, batch_size)

    def _fn(self, forced_bos: int | None):
        if forced_bos not in self._fns:
            settings = dataclasses.replace(
                self.settings, num_return_sequences=1, forced_bos_token_id=forced_bos
            )
            self._fns[forced_bos] = make_generate_fn(self.config, settings, mesh=self.mesh)
        return self._fns[forced_bos]

    def __call__(self, features, mask, forced_bos: int | None = None) -> np.ndarray:
        """features [local rows, frames, F] and mask [local rows, frames] of this process ->
        ids [global rows, max_length] int32 on every process (start token first)."""
        rows = features.shape[0] * jax.process_count()  # multi-process uses every device
        put = jax.make_array_from_process_local_data
        feats = put(self.row_sharding, features, (rows, *features.shape[1:]))
        mask = put(self.row_sharding, mask, (rows, mask.shape[1]))
        key = (forced_bos, feats.shape)
        if key not in self._compiled:
            start = time.perf_counter()
            lowered = self._fn(forced_bos).lower(self.params, feats, mask)
            self._compiled[key] = lowered.compile()
            self.compile_seconds += time.perf_counter() - start
        ids, _ = self._compiled[key](self.params, feats, mask)
        return gather_rows(ids)
