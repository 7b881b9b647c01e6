"""Bucketing bounds compilations; the pure jitted API; the persistent compilation cache."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from s2t_jax import Speech2TextForConditionalGeneration
from s2t_jax.decoding import search, settings
from s2t_jax.decoding.buckets import DEFAULT_BUCKETS, bucket_for, pad_to_bucket
from tests.decoding.conftest import save_varied_model, speech_features


def test_bucket_for():
    assert bucket_for(1, (128, 256)) == 128
    assert bucket_for(128, (256, 128)) == 128
    assert bucket_for(129, (128, 256)) == 256
    assert bucket_for(300, (128, 256)) == 512  # past the largest: multiples of it
    assert bucket_for(77, None) == 77
    assert list(DEFAULT_BUCKETS) == sorted(DEFAULT_BUCKETS)
    with pytest.raises(ValueError):
        bucket_for(5, (0, 8))


def test_pad_to_bucket_keeps_padding_masked():
    x = np.ones((2, 100, 3), np.float32)
    x2, mask = pad_to_bucket(x, None, (64, 128))
    assert x2.shape == (2, 128, 3) and mask.shape == (2, 128)
    assert mask[:, :100].all() and not mask[:, 100:].any()
    assert not x2[:, 100:].any()
    m = np.ones((2, 100), np.int32)
    m[1, 60:] = 0
    _, mask = pad_to_bucket(x, m, (64, 128))
    assert mask.sum(1).tolist() == [100, 60]


def test_same_bucket_does_not_recompile(varied):
    """A second length inside the bucket reuses the compiled search; settings that are runtime
    values (length_penalty, min_length, early_stopping, num_return_sequences) do too."""
    _, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=(1.2, 0.9, 0.7))
    assert x.shape[1] <= 128
    static = settings.resolve_settings(ours, num_beams=3, max_length=12).static()
    before = search.TRACE_COUNTS[static]
    kw = dict(num_beams=3, max_length=12, buckets=(64, 128, 256))
    first = ours.generate(x, mask, **kw)
    assert search.TRACE_COUNTS[static] == before + 1
    second = ours.generate(x[:, :100], mask[:, :100], **kw)  # another length, same bucket
    ours.generate(x, mask, length_penalty=0.3, min_length=5, early_stopping=True, **kw)
    ours.generate(x, mask, num_return_sequences=2, early_stopping="never", **kw)
    assert search.TRACE_COUNTS[static] == before + 1
    assert first.shape[0] == second.shape[0] == 3
    ours.generate(np.pad(x, ((0, 0), (0, 90), (0, 0))), np.pad(mask, ((0, 0), (0, 90))), **kw)
    assert search.TRACE_COUNTS[static] == before + 2  # the next bucket: one more


def test_bucket_padding_is_invisible_with_zero_padded_frames(tmp_path):
    """With zero_padded_frames (padding cannot leak through the convs) the bucket size does not
    change the ids. Without it, transformers itself gives different encoder states for
    different padding (fairseq issue 3078), so parity tests pass buckets=None."""
    save_varied_model(tmp_path, "conv3_gelu_untied")
    ours = Speech2TextForConditionalGeneration.from_pretrained(tmp_path, zero_padded_frames=True)
    x, mask = speech_features(ours.config.input_feat_per_channel)
    exact = ours.generate(x, mask, num_beams=4, max_length=25, buckets=None, return_scores=True)
    padded = ours.generate(x, mask, num_beams=4, max_length=25, buckets=(512,), return_scores=True)
    np.testing.assert_array_equal(exact[0], padded[0])
    np.testing.assert_allclose(exact[1], padded[1], atol=1e-4, rtol=1e-6)


def test_batch_buckets_drop_padding_rows(varied):
    _, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel)
    plain = ours.generate(x[:3], mask[:3], num_beams=4, max_length=30, buckets=None)
    padded = ours.generate(
        x[:3], mask[:3], num_beams=4, max_length=30, buckets=None, batch_buckets=(8,)
    )
    np.testing.assert_array_equal(plain, padded)


def test_make_generate_fn_with_a_params_pytree(varied):
    """The pure API the training loop uses: params in, fixed-shape ids and scores out."""
    _, ours, _ = varied("wide_untied")
    x, mask = speech_features(ours.config.input_feat_per_channel)
    fn = search.make_generate_fn(
        ours.config, num_beams=4, max_length=30, num_return_sequences=2, length_penalty=0.7
    )
    ids, scores = fn(ours.params, x, mask)
    assert ids.shape == (2 * x.shape[0], 30) and scores.shape == (2 * x.shape[0],)
    ref_ids, ref_scores = ours.generate(
        x,
        mask,
        num_beams=4,
        max_length=30,
        num_return_sequences=2,
        length_penalty=0.7,
        buckets=None,
        return_scores=True,
    )
    ids = np.asarray(ids)
    np.testing.assert_array_equal(ids[:, : ref_ids.shape[1]], ref_ids)
    assert (ids[:, ref_ids.shape[1] :] == ours.config.pad_token_id).all()
    np.testing.assert_allclose(np.asarray(scores), ref_scores, atol=1e-5)
    # Other params of the same shapes: no retrace, different output.
    noisy = jax.tree.map(lambda p: p * 1.5, ours.params)
    assert not np.array_equal(np.asarray(fn(noisy, x, mask)[0]), ids)


def test_persistent_compilation_cache(tmp_path, varied):
    """A second process loads the compiled search from the cache directory."""
    _, _, model_dir = varied("tiny")
    script = textwrap.dedent(
        f"""
        import numpy as np
        from s2t_jax import Speech2TextForConditionalGeneration
        from s2t_jax.decoding.compilation_cache import enable_compilation_cache
        enable_compilation_cache({str(tmp_path / "cache")!r})
        model = Speech2TextForConditionalGeneration.from_pretrained({str(model_dir)!r})
        x = np.zeros((1, 64, model.config.input_feat_per_channel), np.float32)
        print(model.generate(x, num_beams=2, max_length=6).shape)
        """
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    cache = tmp_path / "cache"
    stamps = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
        stamps.append({p.name: p.stat().st_mtime_ns for p in cache.iterdir()})
    assert stamps[0] and stamps[1] == stamps[0]  # the second run read them, wrote nothing
