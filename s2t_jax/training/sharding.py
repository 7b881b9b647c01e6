"""Sharding of the train state: logical axis names for every array, and the rules table that
maps logical names to mesh axes (MaxText's scheme). The mesh itself is s2t_jax.parallel.mesh.

Why logical names: the model code stays free of mesh axes, and one table in the config decides
data parallelism, FSDP or tensor parallelism. The model modules are not annotated (their param
names are fixed by checkpoint conversion), so `logical_axes` derives each array's names from its
path and rank: `.../fc1/kernel` [in, out] is ('embed', 'mlp'), and so on. Adam's moments and
the gradient accumulator mirror the params' paths, so one function names the whole state.

With fsdp > 1, XLA all-gathers each weight before use and reduce-scatters its gradient. The
batch is split over ('data', 'fsdp') (rule 'batch'). `config.mesh` gives the sizes, one of them
-1 ("the rest"); `config.sharding.rules` the table. A dimension whose size a rule's mesh
axes do not divide stays replicated (logged once), so any vocabulary size works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# (logical name, mesh axis | tuple of mesh axes | None). First match wins.
DEFAULT_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("table_vocab", ("tensor", "fsdp")),
    ("table_embed", None),
    ("conv_out", "fsdp"),
    ("conv_in", None),
    ("norm", None),
)

# Module name -> logical names of (kernel, bias). Kernels are [in, out] (conv: [width, in, out]).
_BY_MODULE = {
    "q_proj": (("embed", "heads"), ("heads",)),
    "k_proj": (("embed", "heads"), ("heads",)),
    "v_proj": (("embed", "heads"), ("heads",)),
    "out_proj": (("heads", "embed"), ("embed",)),
    "fc1": (("embed", "mlp"), ("mlp",)),
    "fc2": (("mlp", "embed"), ("embed",)),
    "lm_head": (("embed", "vocab"), ("vocab",)),
    "ctc": (("embed", "vocab"), ("vocab",)),
    # The Conformer block's feed-forward modules, position projection and convolution module
    # (1-wide and depthwise kernels are [width, in, out]; depthwise has in = 1).
    "w_1": (("embed", "mlp"), ("mlp",)),
    "w_2": (("mlp", "embed"), ("embed",)),
    "linear_pos": (("embed", "heads"), None),
    "pointwise_conv1": ((None, "embed", "mlp"), None),
    "pointwise_conv2": ((None, "mlp", "embed"), None),
    "depthwise_conv": ((None, None, "embed"), None),
}
_CONV = ((None, "conv_in", "conv_out"), ("conv_out",))


def _names(path) -> list[str]:
    out = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(str(getattr(k, attr)))
                break
    return out


def logical_axes(path, shape: Sequence[int]) -> tuple[str | None, ...]:
    """Logical axis names of one state array, from its tree path and rank.

    Unknown arrays (scalars, step counters, anything new) get None everywhere: replicated.
    """
    names = _names(path)
    leaf, parent = (names[-1] if names else ""), (names[-2] if len(names) > 1 else "")
    rank = len(shape)
    if leaf == "embedding" and rank == 2:
        # The lookup's output [B, L, D] inherits a sharded D from the table, which clashes with
        # the batch sharding of the activations (XLA then replicates and re-splits it every
        # step); rows sharded over the vocabulary do not.
        return ("table_vocab", "table_embed")
    if "norm" in parent and rank == 1:
        return ("norm",)
    pair = _CONV if parent.startswith("conv_layers") else _BY_MODULE.get(parent)
    if pair is not None:
        kernel, bias = pair
        if leaf == "kernel" and rank == len(kernel):
            return kernel
        if leaf == "bias" and rank == 1 and bias is not None:
            return bias
    return (None,) * rank


def tree_logical_axes(tree):
    """`logical_axes` for every leaf of a pytree of arrays or ShapeDtypeStructs."""
    return jax.tree_util.tree_map_with_path(lambda p, x: logical_axes(p, np.shape(x)), tree)


# --------------------------------------------------------------------------------------------
# Logical names -> PartitionSpecs
# --------------------------------------------------------------------------------------------

_warned: set = set()


def _rule_table(rules) -> dict:
    table = {}
    for name, axes in rules:
        table.setdefault(name, axes)
    return table


def spec_for(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules) -> P:
    """Logical names of one array -> PartitionSpec on `mesh`.

    Mesh axes of size 1 are dropped (they shard nothing), a mesh axis is used at most once per
    array, and a dimension the mesh axes do not divide stays replicated.
    """
    table = _rule_table(rules)
    used: set = set()
    spec = []
    for name, dim in zip(axes, shape):
        target = table.get(name) if name is not None else None
        if name is not None and name not in table and ("missing", name) not in _warned:
            _warned.add(("missing", name))
            logging.warning("sharding rules have no entry for %r: replicated", name)
        if target is None:
            spec.append(None)
            continue
        target = (target,) if isinstance(target, str) else tuple(target)
        for a in target:
            if a not in mesh.shape:
                raise ValueError(f"sharding rule {name!r} -> {a!r}: no such mesh axis")
        target = tuple(a for a in target if mesh.shape[a] > 1 and a not in used)
        size = math.prod(mesh.shape[a] for a in target)
        if not target or dim % size:
            if target and (name, dim, size) not in _warned:
                _warned.add((name, dim, size))
                logging.info(
                    "%r dim %d not divisible by %s=%d: replicated", name, dim, target, size
                )
            spec.append(None)
            continue
        used.update(target)
        spec.append(target[0] if len(target) == 1 else target)
    while spec and spec[-1] is None:
        spec.pop()
    return P(*spec)


def tree_shardings(tree, mesh: Mesh, rules=DEFAULT_RULES):
    """NamedSharding for every leaf of a state pytree (arrays or ShapeDtypeStructs)."""

    def one(path, x):
        shape = np.shape(x)
        return NamedSharding(mesh, spec_for(logical_axes(path, shape), shape, mesh, rules))

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_spec(mesh: Mesh, rules=DEFAULT_RULES) -> P:
    """Leading (batch) dimension over the mesh axes of rule 'batch'; the rest replicated."""
    target = _rule_table(rules).get("batch")
    target = () if target is None else (target,) if isinstance(target, str) else tuple(target)
    target = tuple(a for a in target if mesh.shape[a] > 1)
    if not target:
        return P()
    return P(target[0] if len(target) == 1 else target)


def batch_shards(mesh: Mesh, rules=DEFAULT_RULES) -> int:
    """How many ways the batch is split: global batch sizes must be a multiple of this."""
    spec = batch_spec(mesh, rules)
    if not spec:
        return 1
    axes = spec[0] if isinstance(spec[0], tuple) else (spec[0],)
    return math.prod(mesh.shape[a] for a in axes)


# --------------------------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------------------------


def bytes_per_device(tree) -> dict:
    """{device: bytes of `tree` that device holds}, over this process's devices."""
    out: dict = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out


def describe(tree, shardings) -> str:
    """One log line per distinct spec: how much of the state each layout covers."""
    counts: dict = {}
    for leaf, s in zip(jax.tree.leaves(tree), jax.tree.leaves(shardings)):
        key = str(s.spec)
        n, size = counts.get(key, (0, 0))
        counts[key] = (n + 1, size + int(np.prod(np.shape(leaf))))
    return "; ".join(
        f"{spec}: {n} arrays, {size / 1e6:.2f}M values"
        for spec, (n, size) in sorted(counts.items(), key=lambda kv: -kv[1][1])
    )
