"""Logical-axis sharding: every big array gets a sharded layout, FSDP matches data parallelism,
and FSDP really divides the bytes each device holds."""

import dataclasses
import functools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs import common
from s2t_jax.models.params import abstract_params
from s2t_jax.parallel.mesh import make_mesh
from s2t_jax.training import sharding, train_state
from s2t_jax.training.task import model_config_from
from tests.training.helpers import make_task, random_batch


def _abstract_state(task):
    return jax.eval_shape(functools.partial(train_state.init_state, task), jax.random.key(0))


def test_every_large_array_of_the_large_model_is_sharded_under_fsdp():
    c = common.base_config()
    c.model = common.model_config("large", 10000, tied=False)
    params = abstract_params(model_config_from(c, 10000))
    mesh = make_mesh({"data": 1, "fsdp": 8})
    specs = sharding.tree_shardings(params, mesh)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for (path, leaf), s in zip(leaves, jax.tree.leaves(specs)):
        if leaf.size >= 1 << 16:  # everything but biases and norms
            assert "fsdp" in str(s.spec), (jax.tree_util.keystr(path), s.spec)
    axes = sharding.tree_logical_axes(params)
    assert axes["lm_head"]["kernel"] == ("embed", "vocab")
    assert axes["encoder"]["layers_0"]["ffn"]["fc2"]["kernel"] == ("mlp", "embed")
    assert axes["decoder"]["layers_0"]["self_attn"]["out_proj"]["kernel"] == ("heads", "embed")
    assert axes["encoder"]["conv"]["conv_layers_1"]["kernel"] == (None, "conv_in", "conv_out")


def test_rules_table_maps_logical_names_to_mesh_axes():
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = sharding.DEFAULT_RULES
    assert sharding.spec_for(("embed", "mlp"), (64, 128), mesh, rules) == P("fsdp", "tensor")
    assert sharding.spec_for(("vocab", "embed"), (9, 64), mesh, rules) == P(None, "fsdp")
    assert sharding.spec_for(("embed", "mlp"), (63, 128), mesh, rules) == P(None, "tensor")
    assert sharding.spec_for(("norm",), (64,), mesh, rules) == P()
    assert sharding.batch_spec(mesh, rules) == P(("data", "fsdp"))
    assert sharding.batch_shards(mesh, rules) == 4
    # a mesh axis is used once per array; size-1 axes are dropped
    assert sharding.spec_for(("embed", "embed"), (8, 8), mesh, rules) == P("fsdp")
    flat = make_mesh({"data": -1})
    assert sharding.batch_spec(flat) == P("data") and flat.shape["data"] == 8
    assert sharding.spec_for(("embed", "mlp"), (64, 128), flat, rules) == P()


def _steps(task, init, batches, mesh):
    """A few updates with the state laid out by the rules on `mesh`, as the trainer does."""
    spec = sharding.batch_spec(mesh)
    task = dataclasses.replace(
        task, activation_sharding=NamedSharding(mesh, P(spec[0], P.UNCONSTRAINED, P.UNCONSTRAINED))
    )
    state_sh = sharding.tree_shardings(init, mesh)
    data_sh = NamedSharding(mesh, spec)
    repl = NamedSharding(mesh, P())
    state = jax.device_put(init, state_sh)
    step = jax.jit(
        functools.partial(train_state.train_step, task),
        in_shardings=(state_sh, data_sh, repl),
        out_shardings=(state_sh, repl),
    )
    losses = []
    for batch in batches:
        state, metrics = step(state, jax.device_put(batch, data_sh), jax.random.key(1))
        losses.append(float(metrics["loss"]) / float(metrics["ntokens"]))
    return state, losses


def test_fsdp_matches_data_parallel_and_divides_param_bytes():
    assert len(jax.devices()) >= 8
    _, task = make_task()
    init = jax.device_get(
        jax.jit(functools.partial(train_state.init_state, task))(jax.random.key(0))
    )
    batches = [random_batch(batch=8, frames=32, seed=s) for s in range(2)]
    dp_state, dp_loss = _steps(task, init, batches, make_mesh({"data": 8}))
    fsdp_mesh = make_mesh({"data": 2, "fsdp": 4})
    fsdp_state, fsdp_loss = _steps(task, init, batches, fsdp_mesh)
    np.testing.assert_allclose(fsdp_loss, dp_loss, rtol=1e-5)
    # k_proj biases are skipped: their true gradient is 0 (softmax ignores a per-query
    # constant), so Adam turns float noise into +-lr steps whichever the layout.
    for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(jax.device_get(dp_state["params"]))[0],
        jax.tree.leaves(jax.device_get(fsdp_state["params"])),
    ):
        if "k_proj" not in jax.tree_util.keystr(path) or a.ndim > 1:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=str(path))
    total = sum(x.nbytes for x in jax.tree.leaves(dp_state["params"]))
    dp = sharding.bytes_per_device(dp_state["params"])
    fsdp = sharding.bytes_per_device(fsdp_state["params"])
    assert set(dp.values()) == {total}  # replicated: every device holds all of it
    # FSDP: the sharded arrays are 1/4 per device; biases and norms stay whole
    sharded = sum(
        x.nbytes
        for x in jax.tree.leaves(fsdp_state["params"])
        if not x.sharding.is_fully_replicated
    )
    assert sharded > 0.9 * total
    for held in fsdp.values():
        assert held == pytest.approx(sharded / 4 + (total - sharded), rel=1e-6)
    # Adam's moments follow the params
    mu = fsdp_state["opt_state"][1][0].mu
    fc1 = mu["model"]["decoder"]["layers_0"]["ffn"]["fc1"]["kernel"]
    assert fc1.sharding.spec == P("fsdp")
    print(f"param bytes per device: data parallel {total}, fsdp=4 {max(fsdp.values())}")
