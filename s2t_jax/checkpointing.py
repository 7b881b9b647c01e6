"""All Orbax calls live here, so Orbax's API churn touches one file.

`save_params` / `restore_params` store a params pytree in our model directories. The training
loop's CheckpointManager wrapper (train state, iterator state, keep-last-N) builds on the same
module.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp


def save_params(path: str, params) -> None:
    """Writes params atomically (Orbax writes to a temp dir, then renames)."""
    path = os.path.abspath(path)
    params = jax.tree.map(np.asarray, params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, params, force=True)


def restore_params(path: str, target=None):
    """Reads params; `target` (e.g. from jax.eval_shape) fixes structure, dtypes and sharding."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no Orbax params directory")
    with ocp.StandardCheckpointer() as ckptr:
        if target is None:
            return ckptr.restore(path)
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
            target,
        )
        return ckptr.restore(path, abstract)
