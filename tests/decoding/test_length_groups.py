"""generate() encodes a mixed-length batch in length groups: the same ids, less encoder work."""

import numpy as np
import pytest

from s2t_jax.decoding import groups as grouping
from s2t_jax.decoding import search, settings
from s2t_jax.decoding.buckets import pad_to_bucket
from tests.decoding.conftest import hf_generate, speech_features

BUCKETS = (64, 128, 192, 256)


def test_receptive_margin():
    class Cfg:
        conv_kernel_sizes = (5, 5)

    assert grouping.receptive_margin(Cfg) == 6  # 2 + 2 * 2
    Cfg.conv_kernel_sizes = (5, 5, 3)
    assert grouping.receptive_margin(Cfg) == 10  # 2 + 4 + 4 * 1


def test_length_groups_cover_every_row_once(varied):
    _, ours, _ = varied("wide_untied")
    lengths = np.asarray([250, 40, 60, 200, 30, 130, 0, 250])
    groups = grouping.length_groups(lengths, 256, BUCKETS, ours.config)
    assert groups is not None and len(groups) >= 2
    rows = np.concatenate([r for r, _ in groups])
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    margin = grouping.receptive_margin(ours.config)
    for r, frames in groups:
        assert frames in BUCKETS
        assert (np.minimum(lengths[r] + margin, 256) <= frames).all()
    # Equal lengths, or no buckets: one group, the plain padded batch.
    assert grouping.length_groups(np.full(4, 200), 256, BUCKETS, ours.config) is None
    assert grouping.length_groups(lengths, 256, None, ours.config) is None


@pytest.mark.parametrize("num_beams", [4])  # grouping is in the encoder; greedy below
def test_grouped_encoding_gives_the_same_ids(varied, num_beams):
    """Grouped or not, the ids are transformers' on the bucket-padded batch."""
    hf, ours, _ = varied("conv3_gelu_untied")
    seconds = (2.5, 0.5, 0.6, 1.9, 0.4, 1.2, 2.4, 0.7)
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=seconds)
    groups = grouping.length_groups(mask.sum(1), 256, BUCKETS, ours.config)
    assert groups is not None and len(groups) >= 2, groups
    kw = dict(num_beams=num_beams, max_length=30, buckets=BUCKETS, return_scores=True)
    grouped = ours.generate(x, mask, **kw)
    plain = ours.generate(x, mask, group_by_length=False, **kw)
    np.testing.assert_array_equal(grouped[0], plain[0])
    np.testing.assert_allclose(grouped[1], plain[1], atol=1e-4, rtol=1e-6)
    xp, mp = pad_to_bucket(x, mask, BUCKETS)
    ref, _ = hf_generate(hf, xp, mp, num_beams=num_beams, max_length=30)
    np.testing.assert_array_equal(grouped[0], ref)
    assert len({tuple(r) for r in grouped[0].tolist()}) >= 4  # not a degenerate output


def test_grouped_encoding_compiles_once_per_shape(varied):
    _, ours, _ = varied("wide_untied")
    seconds = (2.5, 0.5, 0.6, 1.9)
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=seconds)
    kw = dict(num_beams=2, max_length=10, buckets=BUCKETS)
    static = settings.resolve_settings(ours, num_beams=2, max_length=10).static()
    ours.generate(x, mask, **kw)
    searches, encoders = search.TRACE_COUNTS[static], sum(search.ENCODER_TRACES.values())
    # Other lengths that fall in the same groups: nothing new is traced.
    shorter = mask.copy()
    shorter[:, -5:] = 0
    shorter[1, 40:] = 0
    ours.generate(x, shorter, **kw)
    assert search.TRACE_COUNTS[static] == searches
    assert sum(search.ENCODER_TRACES.values()) == encoders


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_beams=1), dict(num_beams=4, num_return_sequences=2, early_stopping=True)],
)
def test_searching_groups_separately_gives_the_same_ids(varied, monkeypatch, kwargs):
    """At larger batches each length group gets its own search; the ids and scores are those
    of one search over the whole batch."""
    hf, ours, _ = varied("conv3_gelu_untied")
    seconds = (2.5, 0.5, 0.6, 1.9, 0.4, 1.2, 2.4, 0.7) * 2
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=seconds)
    monkeypatch.setattr(grouping, "SEARCH_GROUP_OVERHEAD", 64)
    monkeypatch.setattr(grouping, "MIN_SEARCH_GROUP_ROWS", 4)
    split = grouping.search_groups(mask.sum(1), 256, BUCKETS, ours.config)
    assert split is not None and len(split) >= 2, split
    kw = dict(max_length=30, buckets=BUCKETS, return_scores=True, **kwargs)
    ids, scores = ours.generate(x, mask, **kw)
    monkeypatch.setattr(grouping, "MIN_SEARCH_GROUP_ROWS", 10**6)  # one search
    assert grouping.search_groups(mask.sum(1), 256, BUCKETS, ours.config) is None
    ref_ids, ref_scores = ours.generate(x, mask, **kw)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-4, rtol=1e-6)
    assert ids.shape[0] == len(seconds) * kwargs.get("num_return_sequences", 1)
    assert len({tuple(r) for r in ids.tolist()}) >= 4
