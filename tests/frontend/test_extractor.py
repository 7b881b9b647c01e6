"""Speech2TextFeatureExtractor: parity with transformers' numpy path, padding semantics, the
NaN-free edge cases, global CMVN and both config layouts.

Tolerances (tests/frontend/signals.py): |ours - transformers| < 1e-3 on CMVN'd features and
|ours - transformers| <= 1e-3 * |transformers| + 1e-5 on raw log-mel (measured: <= 2e-6 abs,
float32 output rounding).
"""

import json

import numpy as np
import pytest

from s2t_jax.frontend.audio import AudioError
from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor
from tests.frontend.signals import CMVN_ATOL, SR, WELL_CONDITIONED, assert_raw_close, synthetic


@pytest.fixture(scope="module")
def ours():
    return Speech2TextFeatureExtractor()


@pytest.fixture(scope="module")
def ours_raw():
    return Speech2TextFeatureExtractor(do_ceptral_normalize=False)


# ---- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["libri", "tts", "jfk"])
def test_real_recordings_parity(speech_waves, ref, ref_raw, ours, ours_raw, name):
    wave = speech_waves[name]
    got = ours(wave, sampling_rate=SR)["input_features"][0]
    want = ref(wave, sampling_rate=SR)["input_features"][0]
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() < CMVN_ATOL
    assert_raw_close(
        ours_raw(wave, sampling_rate=SR)["input_features"][0],
        ref_raw(wave, sampling_rate=SR)["input_features"][0],
    )


@pytest.mark.parametrize("name", WELL_CONDITIONED)
def test_synthetic_cmvn_parity(ref, ours, name):
    wave = synthetic()[name]
    got = ours(wave, sampling_rate=SR)["input_features"][0]
    want = ref(wave, sampling_rate=SR)["input_features"][0]
    assert np.abs(got - want).max() < CMVN_ATOL


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding=True),
        dict(padding="longest", pad_to_multiple_of=64),
        dict(padding="max_length", max_length=1200),
        dict(padding="max_length", max_length=300, truncation=True),
        dict(padding="max_length", max_length=300, truncation=True, pad_to_multiple_of=128),
        dict(padding=True, max_length=250, truncation=True),
        dict(padding=True, max_length=10),  # max_length without truncation is ignored
    ],
)
def test_padded_batch_parity(ref, ours, mixed_batch, kwargs):
    got = ours(mixed_batch, sampling_rate=SR, return_tensors="np", **kwargs)
    want = ref(mixed_batch, sampling_rate=SR, return_tensors="np", **kwargs)
    assert got["input_features"].shape == want["input_features"].shape
    assert got["input_features"].dtype == np.float32
    assert got["attention_mask"].dtype == np.int32
    np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
    assert np.abs(got["input_features"] - want["input_features"]).max() < CMVN_ATOL
    pad = got["attention_mask"] == 0
    assert pad.any() or "max_length" not in str(kwargs)
    assert (got["input_features"][pad] == 0.0).all()


def test_unpadded_batch_parity(ref, ours, mixed_batch):
    got = ours(mixed_batch, sampling_rate=SR)
    want = ref(mixed_batch, sampling_rate=SR)
    assert isinstance(got["input_features"], list)
    for g, w, m, wm in zip(
        got["input_features"], want["input_features"], got["attention_mask"], want["attention_mask"]
    ):
        assert g.shape == w.shape and np.abs(g - w).max() < CMVN_ATOL
        np.testing.assert_array_equal(m, wm)
        assert m.dtype == np.int32


def test_truncation_without_padding(ref, ours, mixed_batch):
    got = ours(mixed_batch, sampling_rate=SR, max_length=150, truncation=True)
    want = ref(mixed_batch, sampling_rate=SR, max_length=150, truncation=True)
    for g, w in zip(got["input_features"], want["input_features"]):
        assert g.shape == w.shape and g.shape[0] <= 150
        assert np.abs(g - w).max() < CMVN_ATOL


def test_padding_value_and_no_cmvn(quiet_transformers, mixed_batch):
    kw = dict(padding_value=-7.0, normalize_vars=False)
    got = Speech2TextFeatureExtractor(**kw)(mixed_batch, sampling_rate=SR, padding=True)
    want = quiet_transformers.Speech2TextFeatureExtractor(**kw)(
        mixed_batch, sampling_rate=SR, padding=True
    )
    for g, w in zip(got["input_features"], want["input_features"]):
        assert np.abs(g - w).max() < CMVN_ATOL
    assert (got["input_features"][1][-5:] == -7.0).all()


def test_input_forms(ours, speech_waves):
    wave = speech_waves["libri"][: 2 * SR]
    single = ours(wave, sampling_rate=SR)["input_features"]
    assert isinstance(single, list) and len(single) == 1 and single[0].shape == (198, 80)
    as_list = ours([wave], sampling_rate=SR)["input_features"][0]
    floats = ours(wave.tolist(), sampling_rate=SR)["input_features"][0]
    nested = ours([wave.tolist(), wave.tolist()], sampling_rate=SR)["input_features"]
    stacked = ours(np.stack([wave, wave]), sampling_rate=SR, return_tensors="np")
    for other in (as_list, floats, nested[0], nested[1], stacked["input_features"][1]):
        np.testing.assert_array_equal(other, single[0])
    f64 = ours(wave.astype(np.float64), sampling_rate=SR)["input_features"][0]
    np.testing.assert_array_equal(f64, single[0])
    with pytest.raises(ValueError, match="mono"):
        ours(np.zeros((2, 2, 1000), np.float32), sampling_rate=SR)


def test_jax_tensors(ours, mixed_batch):
    import jax

    out = ours(mixed_batch, sampling_rate=SR, padding=True, return_tensors="jax")
    assert isinstance(out["input_features"], jax.Array)
    assert out.input_features.shape[0] == len(mixed_batch)
    assert out.attention_mask.dtype == np.int32


def _assert_same_layout(got, want):
    """Same keys, container types, dtypes and shapes, and close values."""
    assert set(got) == set(want)
    for key in want:
        g, w = got[key], want[key]
        assert type(g) is type(w), key
        if isinstance(w, np.ndarray):
            assert (g.dtype, g.shape) == (w.dtype, w.shape), key
        assert len(g) == len(w)
        for gi, wi in zip(g, w):
            assert np.asarray(gi).dtype == np.asarray(wi).dtype, key
            assert np.asarray(gi).shape == np.asarray(wi).shape, key
            assert np.abs(np.asarray(gi, np.float64) - np.asarray(wi, np.float64)).max() < CMVN_ATOL


@pytest.mark.parametrize("cmvn", [True, False])
@pytest.mark.parametrize("tensors", [None, "np"])
def test_unpadded_output_types_match(quiet_transformers, mixed_batch, cmvn, tensors):
    """Without padding, utterances of different (or equal) lengths come back in the same
    containers as transformers' (lists, stacked arrays or numpy object arrays)."""
    ours = Speech2TextFeatureExtractor(do_ceptral_normalize=cmvn)
    ref = quiet_transformers.Speech2TextFeatureExtractor(do_ceptral_normalize=cmvn)
    for batch in (mixed_batch[:3], [mixed_batch[1], mixed_batch[1]], mixed_batch[1]):
        kw = dict(sampling_rate=SR, return_tensors=tensors)
        _assert_same_layout(ours(batch, **kw), ref(batch, **kw))
    padded = dict(sampling_rate=SR, padding=True, return_tensors=tensors)
    _assert_same_layout(ours(mixed_batch[:3], **padded), ref(mixed_batch[:3], **padded))


def test_ragged_jax_tensors_raise(ours, mixed_batch):
    with pytest.raises(ValueError, match="padding=True"):
        ours(mixed_batch, sampling_rate=SR, return_tensors="jax")


def test_return_attention_mask_off(ours, mixed_batch):
    out = ours(mixed_batch, sampling_rate=SR, padding=True, return_attention_mask=False)
    assert "attention_mask" not in out
    padded = ours(mixed_batch, sampling_rate=SR, padding=True)
    for a, b in zip(out["input_features"], padded["input_features"]):
        np.testing.assert_array_equal(a, b)


def test_left_padding_normalises_real_frames(ours, mixed_batch):
    left = Speech2TextFeatureExtractor(padding_side="left")
    got = left(mixed_batch, sampling_rate=SR, padding=True, return_tensors="np")
    right = ours(mixed_batch, sampling_rate=SR, padding=True, return_tensors="np")
    for g, r, gm, rm in zip(
        got["input_features"],
        right["input_features"],
        got["attention_mask"],
        right["attention_mask"],
    ):
        n = int(rm.sum())
        assert gm.sum() == n and gm[-n:].all()
        np.testing.assert_array_equal(g[-n:], r[:n])


def test_errors(ours, mixed_batch):
    with pytest.raises(ValueError, match="8000"):
        ours(mixed_batch, sampling_rate=8000)
    with pytest.raises(ValueError, match="max_length"):
        ours(mixed_batch, sampling_rate=SR, padding="max_length")
    with pytest.raises(ValueError, match="max_length"):
        ours(mixed_batch, sampling_rate=SR, truncation=True)
    with pytest.raises(ValueError, match="truncation"):
        ours(mixed_batch, sampling_rate=SR, padding="max_length", max_length=50)


# ---- where transformers gives NaN, we give finite numbers ---------------------------------------


@pytest.mark.parametrize(
    "wave",
    [
        np.zeros(SR, np.float32),  # digital silence
        (0.9 * np.sin(2 * np.pi * 1000 * np.arange(SR) / SR)).astype(np.float32),  # pure tone
        (0.1 * np.random.default_rng(1).standard_normal(400)).astype(np.float32),  # one frame
        (0.1 * np.random.default_rng(1).standard_normal(559)).astype(np.float32),  # still one
    ],
    ids=["silence", "tone_1k", "one_frame_400", "one_frame_559"],
)
def test_degenerate_inputs_are_finite(ours, wave):
    out = ours(wave, sampling_rate=SR)["input_features"][0]
    assert out.shape[0] >= 1 and np.isfinite(out).all()
    padded = ours([wave, synthetic()["white_noise"]], sampling_rate=SR, padding=True)
    assert np.isfinite(padded["input_features"][0]).all()


def test_silence_normalises_to_zero(ours):
    out = ours(np.zeros(SR, np.float32), sampling_rate=SR)["input_features"][0]
    np.testing.assert_array_equal(out, 0.0)


def test_bad_waveforms_are_named_by_batch_index(ours):
    """No 0-frame row and no NaN feature is passed on: each is an AudioError naming its row."""
    chirp = synthetic()["chirp"]
    nan = chirp.copy()
    nan[7] = np.nan
    cases = [
        ([chirp, np.zeros(399, np.float32)], r"raw_speech\[1\]: 399 samples, fewer than one 25 ms"),
        ([chirp, np.zeros(0, np.float32)], r"raw_speech\[1\]: audio has zero length"),
        ([nan, chirp], r"raw_speech\[0\]: audio holds 1 NaN/inf"),
        ([chirp * 1e20], r"raw_speech\[0\]: samples too large"),
        (np.zeros((16000, 2), np.float32), r"raw_speech\[0\]: 2 samples.*\[samples, channels\]"),
    ]
    for speech, message in cases:
        with pytest.raises(AudioError, match=message):
            ours(speech, sampling_rate=SR, padding=True)
    out = ours([np.zeros(400, np.float32), chirp], sampling_rate=SR)  # exactly one frame
    assert out["input_features"][0].shape == (1, 80)


# ---- global CMVN --------------------------------------------------------------------------------


def test_global_cmvn(tmp_path, ours_raw, mixed_batch):
    raw = ours_raw(mixed_batch, sampling_rate=SR)["input_features"]
    stacked = np.concatenate(raw)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    np.savez(tmp_path / "gcmvn.npz", mean=mean, std=std)
    fe = Speech2TextFeatureExtractor(global_cmvn_path=tmp_path / "gcmvn.npz", padding_value=0.0)
    out = fe(mixed_batch, sampling_rate=SR, padding=True, return_tensors="np")
    for i, r in enumerate(raw):
        np.testing.assert_allclose(
            out["input_features"][i, : len(r)], (r - mean) / std, rtol=1e-5, atol=1e-5
        )
        assert (out["input_features"][i, len(r) :] == 0.0).all()
    # The stats travel in the saved config, so a reload needs no npz.
    fe.save_pretrained(tmp_path / "saved")
    again = Speech2TextFeatureExtractor.from_pretrained(tmp_path / "saved")
    np.testing.assert_array_equal(
        again(mixed_batch, sampling_rate=SR, padding=True, return_tensors="np")["input_features"],
        out["input_features"],
    )
    with pytest.raises(ValueError, match="80 values"):
        Speech2TextFeatureExtractor(global_cmvn={"mean": mean[:10], "std": std[:10]})
    np.savez(tmp_path / "bad.npz", average=mean)
    with pytest.raises(ValueError, match="lack"):
        Speech2TextFeatureExtractor(global_cmvn_path=tmp_path / "bad.npz")


# ---- configs ------------------------------------------------------------------------------------


def test_config_layouts(tmp_path, quiet_transformers, mixed_batch):
    kw = dict(num_mel_bins=80, padding_value=1.5, normalize_vars=False, dither=0.0)
    ref = quiet_transformers.Speech2TextFeatureExtractor(**kw)
    # older layout: preprocessor_config.json
    ref.save_pretrained(tmp_path / "old")
    # transformers 5: processor_config.json with a nested feature_extractor entry
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    nested = {"feature_extractor": ref.to_dict(), "processor_class": "Speech2TextProcessor"}
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "processor_config.json").write_text(json.dumps(nested))
    want = ref(mixed_batch, sampling_rate=SR, padding=True, return_tensors="np")
    for source in (
        tmp_path / "old",
        tmp_path / "new",
        tmp_path / "old" / "preprocessor_config.json",
    ):
        fe = Speech2TextFeatureExtractor.from_pretrained(source)
        assert fe.padding_value == 1.5 and fe.normalize_vars is False
        got = fe(mixed_batch, sampling_rate=SR, padding=True, return_tensors="np")
        assert np.abs(got["input_features"] - want["input_features"]).max() < CMVN_ATOL
    # processor_config.json wins over preprocessor_config.json, as in transformers
    (tmp_path / "old" / "processor_config.json").write_text(
        json.dumps({"feature_extractor": {**ref.to_dict(), "padding_value": 9.0}})
    )
    assert Speech2TextFeatureExtractor.from_pretrained(tmp_path / "old").padding_value == 9.0
    with pytest.raises(OSError, match="preprocessor_config.json"):
        Speech2TextFeatureExtractor.from_pretrained(tok_dir)


def test_save_pretrained_format(tmp_path, quiet_transformers):
    fe = Speech2TextFeatureExtractor(padding_value=2.0, dither=0.5)
    written = fe.save_pretrained(tmp_path)
    ref_written = quiet_transformers.Speech2TextFeatureExtractor().save_pretrained(tmp_path / "r")
    assert [p.rsplit("/", 1)[1] for p in written] == [p.rsplit("/", 1)[1] for p in ref_written]
    (path,) = written
    saved = json.loads(open(path).read())
    assert saved["feature_extractor_type"] == "Speech2TextFeatureExtractor"
    assert saved["processor_class"] == "Speech2TextProcessor"
    ref = quiet_transformers.Speech2TextFeatureExtractor()
    assert set(ref.to_dict()) <= set(saved)
    loaded = quiet_transformers.Speech2TextFeatureExtractor.from_pretrained(tmp_path)
    assert (loaded.padding_value, loaded.dither) == (2.0, 0.5)
    again = Speech2TextFeatureExtractor.from_pretrained(tmp_path)
    assert again.to_dict() == fe.to_dict()


# ---- other sampling rates ------------------------------------------------------------------------


def test_other_sampling_rate_reaches_the_kernel():
    """At 8 kHz the extractor frames as Kaldi does there (tests/frontend/test_fbank.py)."""
    from s2t_jax.frontend.cmvn import utterance_cmvn
    from s2t_jax.frontend.fbank import kaldi_fbank

    wave = (0.1 * np.random.default_rng(2).standard_normal(8000)).astype(np.float32)
    out = Speech2TextFeatureExtractor(sampling_rate=8000)(wave, sampling_rate=8000)
    want = utterance_cmvn(kaldi_fbank([wave], sampling_rate=8000)[0])
    np.testing.assert_array_equal(out["input_features"][0], want)


def test_unknown_config_keys_round_trip(tmp_path, quiet_transformers):
    """to_dict / to_json_file / from_json_file / save_pretrained keep keys the extractor does
    not use, as transformers does."""
    kw = dict(padding_value=2.0, chunk_length=30, note={"a": [1, 2]})
    ours = Speech2TextFeatureExtractor(**kw)
    ref = quiet_transformers.Speech2TextFeatureExtractor(**kw)
    assert ours.to_dict() == ref.to_dict()
    assert ours.chunk_length == ref.chunk_length == 30
    ours.to_json_file(tmp_path / "ours.json")
    ref.to_json_file(tmp_path / "ref.json")
    assert json.loads((tmp_path / "ours.json").read_text()) == json.loads(
        (tmp_path / "ref.json").read_text()
    )
    for path in (tmp_path / "ours.json", tmp_path / "ref.json"):
        again = Speech2TextFeatureExtractor.from_json_file(path)
        assert again.to_dict() == ours.to_dict()
        assert (
            quiet_transformers.Speech2TextFeatureExtractor.from_json_file(path).note == kw["note"]
        )
    ours.save_pretrained(tmp_path / "saved")
    loaded = quiet_transformers.Speech2TextFeatureExtractor.from_pretrained(tmp_path / "saved")
    assert loaded.chunk_length == 30
    assert Speech2TextFeatureExtractor.from_pretrained(tmp_path / "saved").note == kw["note"]
    with pytest.raises(ValueError, match="shadow"):
        Speech2TextFeatureExtractor(pad=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(padding=False),
        dict(padding="max_length", max_length=400),
        dict(padding="longest", pad_to_multiple_of=64),
        dict(padding=True, truncation=True, max_length=100),
        dict(padding=True, return_attention_mask=False),
        dict(padding=True, return_tensors="np"),
    ],
)
def test_pad_matches_transformers(ours, ref, mixed_batch, kwargs):
    """`pad` on extracted features (a dict of lists, or a list of dicts as a collate_fn gets)."""
    feats = ref(mixed_batch[:3], sampling_rate=SR)["input_features"]
    for inputs in (
        lambda: {"input_features": list(feats)},
        lambda: [{"input_features": f} for f in feats],
        lambda: {"input_features": [f.astype(np.float64).tolist() for f in feats]},
    ):
        _assert_same_layout(ours.pad(inputs(), **kwargs), ref.pad(inputs(), **kwargs))


def test_pad_left_and_errors(quiet_transformers, ref, mixed_batch):
    feats = ref(mixed_batch[:3], sampling_rate=SR)["input_features"]
    kw = dict(padding_side="left", padding_value=-1.0)
    ours = Speech2TextFeatureExtractor(**kw)
    left_ref = quiet_transformers.Speech2TextFeatureExtractor(**kw)
    _assert_same_layout(
        ours.pad({"input_features": list(feats)}), left_ref.pad({"input_features": list(feats)})
    )
    for bad in (
        dict(padding="max_length"),
        dict(truncation=True),
    ):
        with pytest.raises(ValueError):
            left_ref.pad({"input_features": list(feats)}, **bad)
        with pytest.raises(ValueError):
            ours.pad({"input_features": list(feats)}, **bad)
    with pytest.raises(ValueError, match="input_features"):
        ours.pad({"input_values": list(feats)})


def test_batch_feature_tensor_type(quiet_transformers):
    from s2t_jax.frontend.model_inputs import BatchFeature

    data = {"a": [[1, 2], [3, 4]], "b": [[1.0, 2.0]], "name": "x", "c": [np.zeros(2), np.ones(3)]}
    got = BatchFeature(dict(data), tensor_type="np")
    want = quiet_transformers.BatchFeature(dict(data), tensor_type="np")
    for key in ("a", "b"):
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
    assert got["name"] == want["name"] == "x"
    assert got["c"].dtype == want["c"].dtype == object
    assert got.data is got and got.a.shape == (2, 2)
    with pytest.raises(ValueError):
        BatchFeature(data, tensor_type="tf")
