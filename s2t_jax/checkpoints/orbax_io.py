"""All Orbax calls live here, so Orbax's API churn touches one file.

`save_params` / `restore_params` store a params pytree in our model directories.
`TrainCheckpointer` wraps Orbax's CheckpointManager for training (train state + data iterator
state + seed, async saves, keep the last N plus the best by a validation metric); a training
workdir's layout around it is s2t_jax/checkpoints/workdir.py.
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


# --------------------------------------------------------------------------------------------
# Training checkpoints
# --------------------------------------------------------------------------------------------


class TrainCheckpointer:
    """Orbax CheckpointManager for training: state + JSON metadata per step, saved async.

    Layout: `<directory>/<step>/{state,meta}`. `meta` holds the data iterator state and the
    run's seed and a fingerprint of the state (s2t_jax/training/resilience.py). Kept: the last
    `keep_last` checkpoints plus the `keep_best` best by `best_metric` (passed as metrics to
    `save`; `best_mode` "min" or "max"). `cleanup_tmp` removes half-written steps a crash left
    behind; only the run that writes the directory may set it (a reader would delete the
    save in progress).
    """

    def __init__(
        self,
        directory: str,
        keep_last: int = 5,
        keep_best: int = 1,
        best_metric: str = "loss",
        best_mode: str = "min",
        async_save: bool = True,
        cleanup_tmp: bool = False,
    ):
        from orbax.checkpoint import checkpoint_managers as cm

        policies = [cm.LatestN(n=max(int(keep_last), 1))]
        if keep_best > 0:
            policies.append(
                cm.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=best_mode == "min",  # BestN keeps the tail of the sorted list
                    n=int(keep_best),
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=cm.AnyPreservationPolicy(policies),
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=cleanup_tmp,
        )
        self.directory = os.path.abspath(directory)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, meta: dict, metrics: dict | None = None) -> None:
        """Starts an async save; device buffers are copied out before this returns, so the
        caller may donate `state` to the next step at once."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        metrics = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        self.manager.save(int(step), args=args, metrics=metrics, force=True)

    def restore(self, step: int, abstract_state=None):
        """-> (state, meta). `abstract_state` (ShapeDtypeStructs with shardings) places the
        arrays; without it the saved tree comes back whole on this process's first device,
        whatever mesh or number of processes saved it (export, averaging, tests)."""
        if abstract_state is None:
            tree = self.manager.item_metadata(int(step))["state"]
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            abstract_state = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                getattr(tree, "tree", tree),
            )
        out = self.manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
            ),
        )
        return out["state"], out["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
