"""The one audio -> features path: `Featurizer` against the extractor, data configs, file kinds."""

import pickle

import numpy as np
import pytest
import soundfile

from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.manifest import create_zip, zip_manifest
from s2t_jax.frontend.audio import load_audio
from s2t_jax.frontend.cmvn import VARIANCE_FLOOR, GlobalCMVN, UtteranceCMVN, utterance_cmvn
from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor
from s2t_jax.frontend.fbank import kaldi_fbank
from s2t_jax.frontend.featurize import Featurizer


def _stats(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"mean": rng.normal(0.0, 3.0, 80), "std": rng.uniform(0.5, 4.0, 80)}


@pytest.fixture(scope="module")
def libri(speech_files):
    """(path, its 16 kHz waveform [samples], its raw fbank [frames, 80])."""
    path = speech_files["libri"]
    wave = load_audio(path, 16000)
    return path, wave, np.array(kaldi_fbank([wave])[0])


@pytest.mark.parametrize("name", ["libri", "tts", "jfk"])
@pytest.mark.parametrize(
    "settings",
    [{}, {"normalize_vars": False}, {"do_ceptral_normalize": False}, {"global_cmvn": _stats()}],
    ids=["utterance", "means-only", "none", "global"],
)
def test_from_extractor_equals_the_extractor(speech_files, name, settings):
    extractor = Speech2TextFeatureExtractor(**settings)
    path = speech_files[name]
    wave = load_audio(path, 16000)
    want = extractor(wave, sampling_rate=16000)["input_features"][0]  # [frames, 80]
    got, seconds = Featurizer.from_extractor(extractor)(str(path))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    assert seconds == len(wave) / 16000


def _data_config(tmp_path, transforms, stats=None, **raw) -> DataConfig:
    if stats is not None:
        np.savez(tmp_path / "gcmvn.npz", **stats)
        raw["global_cmvn"] = {"stats_npz_path": "gcmvn.npz"}
    return DataConfig(root=str(tmp_path), raw={"feature_transforms": transforms, **raw})


def test_utterance_cmvn_from_data_config(tmp_path, libri):
    path, _, raw = libri
    data = _data_config(
        tmp_path,
        {"_train": ["utterance_cmvn", "specaugment"], "*": []},
        utterance_cmvn={"norm_means": True, "norm_vars": False},
    )
    train = data.featurizer("train", is_train=True)
    assert train.cmvn == [UtteranceCMVN(True, False)]
    np.testing.assert_array_equal(train(str(path))[0], utterance_cmvn(raw, None, True, False))
    dev = data.featurizer("dev", is_train=False)
    np.testing.assert_array_equal(dev(str(path))[0], raw)


def test_global_cmvn_from_data_config(tmp_path, libri):
    path, _, raw = libri
    stats = _stats(1)
    data = _data_config(tmp_path, {"*": ["global_cmvn", "utterance_cmvn"]}, stats)
    featurizer = data.featurizer("dev", is_train=False)
    scale = (1.0 / stats["std"]).astype(np.float32)
    want = utterance_cmvn((raw - stats["mean"].astype(np.float32)) * scale)
    np.testing.assert_array_equal(featurizer(str(path))[0], want)
    # The stats are read once, when the featurizer is made, and travel with it to workers.
    (tmp_path / "gcmvn.npz").unlink()
    clone = pickle.loads(pickle.dumps(featurizer))
    np.testing.assert_array_equal(clone(str(path))[0], want)


def test_global_std_is_floored(libri):
    _, _, raw = libri
    stats = _stats(2)
    stats["std"][:5] = 0.0
    featurizer = Featurizer(cmvn=[GlobalCMVN(stats["mean"], stats["std"])])
    got = featurizer.normalise(raw)
    assert np.isfinite(got).all()
    floor = np.float32(1.0 / np.sqrt(VARIANCE_FLOOR))
    np.testing.assert_array_equal(
        got[:, :5], (raw[:, :5] - stats["mean"][:5].astype(np.float32)) * floor
    )
    # The extractor uses the same floor.
    extractor = Speech2TextFeatureExtractor(global_cmvn=stats)
    np.testing.assert_array_equal(Featurizer.from_extractor(extractor).normalise(raw), got)


def test_global_stats_must_match_the_bins(tmp_path):
    np.savez(tmp_path / "gcmvn.npz", mean=np.zeros(40), std=np.ones(40))
    with pytest.raises(ValueError, match="gcmvn.npz: 40 global CMVN values, expected 80"):
        Featurizer(cmvn=[{"kind": "global", "stats_npz_path": str(tmp_path / "gcmvn.npz")}])


def test_npy_and_zip_members(tmp_path, libri):
    _, _, raw = libri
    np.save(tmp_path / "utt1.npy", raw)
    np.save(tmp_path / "utt2.npy", raw[:50])
    create_zip(tmp_path / "fbank80.zip", [tmp_path / "utt1.npy", tmp_path / "utt2.npy"])
    members = zip_manifest(tmp_path / "fbank80.zip")
    featurizer = Featurizer(cmvn=[UtteranceCMVN()])

    got, seconds = featurizer("utt1.npy", root=str(tmp_path))
    np.testing.assert_array_equal(got, utterance_cmvn(raw))
    assert seconds == pytest.approx(len(raw) * 0.010)
    for stem, rows in (("utt1", raw), ("utt2", raw[:50])):
        location, frames = members[stem]
        assert frames == len(rows)
        got, seconds = featurizer(location.replace(str(tmp_path) + "/", ""), root=str(tmp_path))
        np.testing.assert_array_equal(got, utterance_cmvn(rows))
        assert seconds == pytest.approx(len(rows) * 0.010)


def test_normalise_into_out(libri):
    _, _, raw = libri
    stats = _stats(3)
    featurizer = Featurizer(cmvn=[UtteranceCMVN(), GlobalCMVN(stats["mean"], stats["std"])])
    out = np.full((len(raw) + 2, 80), 7.0, np.float32)
    result = featurizer.normalise(raw, out=out[1:-1])
    np.testing.assert_array_equal(out[1:-1], featurizer.normalise(raw))
    assert result.base is out and (out[0] == 7.0).all() and (out[-1] == 7.0).all()
    np.testing.assert_array_equal(Featurizer().normalise(raw), raw)


def test_errors_name_the_file(tmp_path):
    featurizer = Featurizer()
    soundfile.write(tmp_path / "short.wav", np.zeros(300, np.float32), 16000)  # < 25 ms
    with pytest.raises(ValueError, match="short.wav: shorter than one 25 ms frame"):
        featurizer("short.wav", root=str(tmp_path))
    np.save(tmp_path / "bins.npy", np.zeros((20, 40), np.float32))
    with pytest.raises(ValueError, match="bins.npy: 40 feature bins, expected 80"):
        featurizer(str(tmp_path / "bins.npy"))
    with pytest.raises((OSError, ValueError), match="missing.flac"):
        featurizer("missing.flac", root=str(tmp_path))
    with pytest.raises(ValueError, match="unknown CMVN step"):
        Featurizer(cmvn=[{"kind": "speaker"}])
