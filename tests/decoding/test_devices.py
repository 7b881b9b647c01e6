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

from s2t_jax import generation
from tests.decoding.conftest import hf_generate, speech_features

BUCKETS = (64, 128, 192, 256)
SECONDS = (2.5, 0.5, 0.6, 1.9, 0.4, 1.2, 2.4)


def _split_meshes():
    return {key[3].size for key in generation._SEARCHES if key[3] is not None}


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_beams=1),
        dict(num_beams=4, num_return_sequences=2, early_stopping=True, length_penalty=0.7),
    ],
)
@pytest.mark.parametrize("buckets", [None, BUCKETS])
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
    monkeypatch.setattr(generation, "SEARCH_GROUP_OVERHEAD", 64)
    monkeypatch.setattr(generation, "MIN_SEARCH_GROUP_ROWS", 4)
    assert generation._search_groups(mask.sum(1), 256, BUCKETS, ours.config) is not None
    kw = dict(num_beams=3, max_length=25, buckets=BUCKETS, return_scores=True)
    ids, scores = ours.generate(x, mask, devices=4, **kw)
    one_ids, one_scores = ours.generate(x, mask, devices=1, **kw)
    np.testing.assert_array_equal(ids, one_ids)
    np.testing.assert_allclose(scores, one_scores, atol=1e-5, rtol=1e-6)


def test_split_search_compiles_once_per_shape(varied):
    _, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=SECONDS[:4])
    kw = dict(num_beams=2, max_length=12, buckets=BUCKETS, group_by_length=False, devices=2)
    static = generation.resolve_settings(ours, num_beams=2, max_length=12).static()
    ours.generate(x, mask, **kw)
    traces = generation.TRACE_COUNTS[static]
    shorter = mask.copy()
    shorter[:, -7:] = 0
    ours.generate(x[:, :-3], shorter[:, :-3], **kw)  # the same bucket
    assert generation.TRACE_COUNTS[static] == traces


def test_generation_mesh_choice():
    local = jax.local_devices()
    assert len(local) == 8  # tests/conftest.py
    assert generation.generation_mesh(1, rows=5) is None
    assert generation.generation_mesh(None, rows=1) is None
    assert generation.generation_mesh(None, rows=3).size == 3  # no device without a real row
    assert generation.generation_mesh(None, rows=64).size == 8
    assert generation.generation_mesh(4, rows=64).devices.tolist() == local[:4]
    assert generation.generation_mesh(local[2:4], rows=64).devices.tolist() == local[2:4]
    with pytest.raises(ValueError, match="9.*8 local devices"):
        generation.generation_mesh(9, rows=64)
    with pytest.raises(ValueError, match="empty"):
        generation.generation_mesh([], rows=64)


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
        from s2t_jax.host_devices import use_cpu_cores
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
        from s2t_jax.host_devices import use_cpu_cores
        print(use_cpu_cores(3), jax.device_count())
        """,
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "2"]
