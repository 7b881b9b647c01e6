"""generate() splits a batch over the local devices: the same ids and scores as on one device.

The test session has 8 fake CPU devices (tests/conftest.py), so every generate() call in the
other decoding tests already runs split; these tests pin the split against one device, on the
plain, the length-grouped and the separately-searched paths, and check how devices are chosen.
"""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from s2t_jax.decoding import groups, placement, search, settings
from tests.decoding.conftest import hf_generate, speech_features

BUCKETS = (64, 128, 192, 256)
SECONDS = (2.5, 0.5, 0.6, 1.9, 0.4, 1.2, 2.4)


def _split_meshes():
    return {key[3].size for key in search.COMPILED_SEARCHES if key[3] is not None}


# Greedy unbucketed and beam bucketed: each search and each bucket mode once (the split of
# rows over devices does not depend on the pairing; the suite's time does).
@pytest.mark.parametrize(
    "kwargs,buckets",
    [
        (dict(num_beams=1), None),
        (
            dict(num_beams=4, num_return_sequences=2, early_stopping=True, length_penalty=0.7),
            BUCKETS,
        ),
    ],
)
def test_split_over_devices_gives_the_same_ids(varied, kwargs, buckets):
    """7 rows over 1, 2 (padded to 8 rows) and 7 devices: identical ids, scores to 1e-5; and
    transformers' ids on the unbucketed batch."""
    hf, ours, _ = varied("conv3_gelu_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=SECONDS)
    kw = dict(max_length=30, buckets=buckets, return_scores=True, **kwargs)
    one_ids, one_scores = ours.generate(x, mask, devices=1, **kw)
    for devices in (2, None):
        ids, scores = ours.generate(x, mask, devices=devices, **kw)
        np.testing.assert_array_equal(ids, one_ids)
        np.testing.assert_allclose(scores, one_scores, atol=1e-5, rtol=1e-6)
    assert {2, len(SECONDS)} <= _split_meshes()
    if buckets is None:
        hf_kwargs = {k: v for k, v in kwargs.items()}
        ref, _ = hf_generate(hf, x, mask, max_length=30, **hf_kwargs)
        np.testing.assert_array_equal(one_ids, ref)
    assert len({tuple(r) for r in one_ids.tolist()}) >= 4  # not a degenerate output


def test_split_search_groups_give_the_same_ids(varied, monkeypatch):
    """Separate searches per length group, each split over devices."""
    _, ours, _ = varied("conv3_gelu_untied")
    seconds = SECONDS * 2 + (0.7, 1.1)
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=seconds)
    monkeypatch.setattr(groups, "SEARCH_GROUP_OVERHEAD", 64)
    monkeypatch.setattr(groups, "MIN_SEARCH_GROUP_ROWS", 4)
    assert groups.search_groups(mask.sum(1), 256, BUCKETS, ours.config) is not None
    kw = dict(num_beams=3, max_length=25, buckets=BUCKETS, return_scores=True)
    ids, scores = ours.generate(x, mask, devices=4, **kw)
    one_ids, one_scores = ours.generate(x, mask, devices=1, **kw)
    np.testing.assert_array_equal(ids, one_ids)
    np.testing.assert_allclose(scores, one_scores, atol=1e-5, rtol=1e-6)


def test_split_search_compiles_once_per_shape(varied):
    _, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=SECONDS[:4])
    kw = dict(num_beams=2, max_length=12, buckets=BUCKETS, group_by_length=False, devices=2)
    static = settings.resolve_settings(ours, num_beams=2, max_length=12).static()
    ours.generate(x, mask, **kw)
    traces = search.TRACE_COUNTS[static]
    shorter = mask.copy()
    shorter[:, -7:] = 0
    ours.generate(x[:, :-3], shorter[:, :-3], **kw)  # the same bucket
    assert search.TRACE_COUNTS[static] == traces


def test_generation_mesh_choice():
    local = jax.local_devices()
    assert len(local) == 8  # tests/conftest.py
    assert placement.generation_mesh(1, rows=5) is None
    assert placement.generation_mesh(None, rows=1) is None
    assert placement.generation_mesh(None, rows=3).size == 3  # no device without a real row
    assert placement.generation_mesh(None, rows=64).size == 8
    assert list(placement.generation_mesh(4, rows=64).devices.flat) == local[:4]
    assert list(placement.generation_mesh(local[2:4], rows=64).devices.flat) == local[2:4]
    with pytest.raises(ValueError, match="9.*8 local devices"):
        placement.generation_mesh(9, rows=64)
    with pytest.raises(ValueError, match="empty"):
        placement.generation_mesh([], rows=64)
    with pytest.raises(ValueError, match="devices=0"):
        placement.generation_mesh(0, rows=64)


def _run(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    environ.update(env, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_use_cpu_cores_sets_the_device_count_before_jax_starts():
    out = _run(
        """
        import jax
        from s2t_jax.parallel.host_devices import use_cpu_cores
        assert use_cpu_cores(3) == 3
        assert jax.device_count() == 3, jax.devices()
        try:
            use_cpu_cores(2)
        except RuntimeError as e:
            print("refused:", e)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "refused: use_cpu_cores(2) must run before JAX makes its first array" in out.stdout
    # An explicit XLA flag wins and is reported.
    out = _run(
        """
        import jax
        from s2t_jax.parallel.host_devices import use_cpu_cores
        print(use_cpu_cores(3), jax.device_count())
        """,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2"]


@pytest.mark.parametrize("num_beams", [3])  # greedy's split: test_split_over_devices
def test_make_generate_fn_split_over_a_mesh(varied, num_beams):
    """eval.py's path: the jitted fn over a ("data",) mesh, rows split, one forced BOS per row
    and one for all, gives the unsplit fn's ids."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    _, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel)  # 8 rows
    mesh = Mesh(np.asarray(jax.devices()[:4]), ("data",))
    rows, same = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    params = jax.device_put(ours.params, same)
    langs = [ours.config.vocab_size - 3, ours.config.vocab_size - 4]
    per_row = np.asarray([langs[i % 2] for i in range(len(x))], np.int32)
    kw = dict(num_beams=num_beams, max_length=20)
    one = search.make_generate_fn(ours.config, **kw)
    split = search.make_generate_fn(ours.config, mesh=mesh, **kw)
    xs, ms = jax.device_put(x, rows), jax.device_put(mask, rows)
    for bos in (None, per_row):
        ref, _ = one(ours.params, x, mask, forced_bos_token_ids=bos)
        ids, _ = split(params, xs, ms, forced_bos_token_ids=bos)
        assert ids.sharding.spec[0] == "data"
        np.testing.assert_array_equal(np.asarray(ids), np.asarray(ref))
    assert (np.asarray(ids)[:, 1] == per_row).all()


def test_params_are_copied_once_per_device(varied):
    """Meshes of 3 and 8 devices share the copies on their common devices; new params are
    copied again."""
    _, ours, _ = varied("wide_untied")
    small = placement.generation_mesh(None, rows=3)
    large = placement.generation_mesh(None, rows=8)

    def buffers(params):
        leaf = jax.tree.leaves(params)[0]
        return {s.device: s.data.unsafe_buffer_pointer() for s in leaf.addressable_shards}

    a, b = buffers(placement.replicated(ours.params, small)), None
    b = buffers(placement.replicated(ours.params, large))
    assert len(a) == 3 and len(b) == 8
    assert all(b[device] == pointer for device, pointer in a.items())
    assert placement.replicated(ours.params, large) is placement.replicated(ours.params, large)
    other = jax.tree.map(lambda x: x + 0, ours.params)
    assert buffers(placement.replicated(other, large))[jax.devices()[5]] != b[jax.devices()[5]]
