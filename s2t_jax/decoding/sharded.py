"""`make_generate_fn` over a mesh of every device of every process, for batch evaluation.

Params are replicated, the rows of each global batch are split over the devices, and each
device runs its own search on its rows (no communication per step). The forced first token
(a multilingual model's `<lang:xx>` tag) is a per-row runtime input, so a batch may mix target
languages and one compiled search per input shape serves every language. Each input shape is
lowered and compiled ahead of its first call, so compile time is measured apart from decoding
(results.json reports both).
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

NO_FORCED_BOS = -1  # a row of `forced_bos` that forces nothing


def forced_bos_rows(forced_bos, rows: int, what: str = "forced_bos") -> np.ndarray:
    """None, one token id for every row, or one per row -> int32 [rows] (-1: none).

    Refuses a per-row array of another length, and ids below -1, naming `what`."""
    if forced_bos is None:
        return np.full((rows,), NO_FORCED_BOS, np.int32)
    out = np.asarray(forced_bos)
    if out.ndim == 0:
        out = np.full((rows,), int(out), np.int32)
    if out.shape != (rows,) or not np.issubdtype(out.dtype, np.integer):
        raise ValueError(
            f"{what}: expected None, an int or an integer array of shape ({rows},) (one token "
            f"id per row, -1 for none); got {out.dtype} {out.shape}"
        )
    if (out < NO_FORCED_BOS).any():
        raise ValueError(f"{what}: token ids must be >= 0 (or -1 for none), got {out.min()}")
    return out.astype(np.int32)


class ShardedGenerator:
    """`make_generate_fn` over a ("data",) mesh: params replicated, batch rows sharded, and
    each device searching its own rows (no communication per step).

    The forced first token is an input ([rows] int32, -1 = none), not a setting: batches may
    mix target languages, and each input shape is compiled once for all of them, lowered and
    compiled ahead of its first call so compile time is measured apart from decoding.
    """

    def __init__(self, model, settings: GenerationSettings, num_devices: int = 0):
        self.mesh = make_mesh(None, num_devices)  # every device's "data" rows
        self.num_devices = self.mesh.size
        self.row_sharding = NamedSharding(self.mesh, P("data"))
        self.params = jax.device_put(model.variables, NamedSharding(self.mesh, P()))
        self.config = model.config
        # The forced token comes per row with each call; the settings' own would be ignored.
        self.settings = dataclasses.replace(
            settings, num_return_sequences=1, forced_bos_token_id=None
        )
        self._fn = make_generate_fn(self.config, self.settings, mesh=self.mesh)
        self._compiled: dict = {}  # global features shape -> compiled executable
        self.compile_seconds = 0.0
        self.compile_count = 0  # ahead-of-time compilations: one per input shape

    @property
    def shapes(self) -> list[tuple]:
        """The global feature shapes compiled so far, one executable each."""
        return sorted(self._compiled)

    def round_batch(self, batch_size: int) -> int:
        """A global batch holds a multiple of the device count."""
        return -(-max(int(batch_size), 1) // self.num_devices) * self.num_devices

    def local_rows(self, batch_size: int) -> slice:
        """This process's rows of a global batch: the shards of its devices."""
        return process_row_block(self.row_sharding, batch_size)

    def __call__(self, features, mask, forced_bos=None) -> np.ndarray:
        """features [local rows, frames, F], mask [local rows, frames] and forced_bos (None, an
        int, or [local rows] int token ids, -1 = none) of this process -> ids [global rows,
        max_length] int32 on every process (start token first)."""
        local = features.shape[0]
        bos = forced_bos_rows(forced_bos, local)  # [local rows]
        rows = local * jax.process_count()  # multi-process uses every device
        put = jax.make_array_from_process_local_data
        feats = put(self.row_sharding, features, (rows, *features.shape[1:]))
        mask = put(self.row_sharding, mask, (rows, mask.shape[1]))
        bos = put(self.row_sharding, bos, (rows,))
        key = feats.shape
        if key not in self._compiled:
            start = time.perf_counter()
            lowered = self._fn.lower(self.params, feats, mask, bos)
            self._compiled[key] = lowered.compile()
            self.compile_seconds += time.perf_counter() - start
            self.compile_count += 1
        ids, _ = self._compiled[key](self.params, feats, mask, bos)
        return gather_rows(ids)
