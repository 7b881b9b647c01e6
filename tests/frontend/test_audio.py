"""load_audio / validate_waveform: real recordings in three formats and every bad-input case."""

import numpy as np
import pytest
import soundfile

from s2t_jax.frontend.audio import AudioError, load_audio, resample, validate_waveform


def expected_length(path, rate=16000):
    info = soundfile.info(path)
    return round(info.frames * rate / info.samplerate)


@pytest.mark.parametrize(
    "name, rate, channels, subtype",
    [("libri", 16000, 1, "PCM_16"), ("tts", 24000, 1, "PCM_16"), ("jfk", 44100, 2, "PCM_24")],
)
def test_recordings_load_at_16k(speech_files, name, rate, channels, subtype):
    path = speech_files[name]
    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (rate, channels, subtype)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.flags.c_contiguous
    assert abs(wave.shape[0] - expected_length(path)) <= 1
    assert np.isfinite(wave).all()
    assert 0.01 < np.abs(wave).max() <= 1.05  # speech, in [-1, 1] units
    assert np.sqrt(np.mean(wave**2)) > 1e-3


def test_real_lengths_when_shared_present(speech_files):
    """The shared recordings resample to whole 16 kHz lengths (5.855 s, 9 s, 11 s)."""
    lengths = {name: load_audio(path).shape[0] for name, path in speech_files.items()}
    assert lengths["libri"] == 93680
    if speech_files["tts"].name == "1089_134686_000007_000004.wav":
        assert lengths["tts"] == 144000
    if speech_files["jfk"].name == "jfk.flac":
        assert lengths["jfk"] == 176000


def test_native_rate_is_untouched(speech_files):
    path = speech_files["libri"]
    raw, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000
    np.testing.assert_array_equal(load_audio(path, 16000), raw)


def test_resampling_keeps_a_tone(tmp_path):
    """A 1 kHz tone written at 44.1 kHz comes back as the same tone at 16 kHz (VHQ soxr)."""
    t = np.arange(44100 * 2) / 44100
    path = tmp_path / "tone.wav"
    soundfile.write(path, 0.5 * np.sin(2 * np.pi * 1000 * t), 44100, subtype="FLOAT")
    wave = load_audio(path, 16000)
    assert wave.shape == (32000,)
    want = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(32000) / 16000)
    np.testing.assert_allclose(wave[1000:-1000], want[1000:-1000], atol=2e-3)


def test_stereo_is_averaged(tmp_path):
    x = 0.5 * np.sin(2 * np.pi * 300 * np.arange(16000) / 16000)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([x, 0.5 * x], axis=1), 16000, subtype="PCM_24")
    np.testing.assert_allclose(load_audio(path), 0.75 * x, atol=1e-6)


@pytest.mark.parametrize("fmt, subtype, ext", [("OGG", "VORBIS", "ogg"), ("MP3", None, "mp3")])
def test_compressed_formats(tmp_path, fmt, subtype, ext):
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(22050) / 22050)
    path = tmp_path / f"tone.{ext}"
    soundfile.write(path, x, 22050, format=fmt, subtype=subtype)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and abs(wave.shape[0] - 16000) <= 1
    assert 0.2 < np.abs(wave).max() < 0.4


def test_other_target_rate(speech_files):
    wave = load_audio(speech_files["tts"], 8000)
    assert abs(wave.shape[0] - expected_length(speech_files["tts"], 8000)) <= 1


# ---- bad inputs: each names the file and the problem --------------------------------------


def assert_audio_error(path, *words):
    with pytest.raises(AudioError) as info:
        load_audio(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message.lower(), message
    assert isinstance(info.value, ValueError)


def test_missing_file(tmp_path):
    assert_audio_error(tmp_path / "nope.flac", "no such")


def test_directory(tmp_path):
    assert_audio_error(tmp_path, "not a regular file")


def test_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"RIFF not really a wave file" * 10)
    assert_audio_error(path, "unreadable or corrupt")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    assert_audio_error(path, "unreadable or corrupt")


def test_truncated_flac(tmp_path, speech_files):
    data = speech_files["libri"].read_bytes()
    path = tmp_path / "truncated.flac"
    path.write_bytes(data[: len(data) // 2])
    assert_audio_error(path, "corrupt")


def test_zero_length(tmp_path):
    path = tmp_path / "zero.wav"
    soundfile.write(path, np.zeros(0), 16000)
    assert_audio_error(path, "zero length")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path, bad):
    x = np.full(1600, 0.1, np.float32)
    x[100] = bad
    path = tmp_path / "nonfinite.wav"
    soundfile.write(path, x, 16000, subtype="FLOAT")
    assert_audio_error(path, "nan/inf")


def test_bad_target_rate(speech_files):
    with pytest.raises(AudioError, match="sampling_rate"):
        load_audio(speech_files["libri"], 0)


# ---- in-memory arrays ------------------------------------------------------------------------


def test_validate_accepts_mono_and_channels():
    x = np.linspace(-0.5, 0.5, 1000)
    out = validate_waveform(x)
    assert out.dtype == np.float32 and out.shape == (1000,)
    both = validate_waveform(np.stack([x, -x], axis=0), channel_axis=0)
    np.testing.assert_allclose(both, 0.0, atol=1e-7)


def test_validate_scales_integer_pcm():
    pcm = np.array([-32768, 0, 16384], np.int16)
    np.testing.assert_allclose(validate_waveform(pcm), [-1.0, 0.0, 0.5])
    u8 = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(validate_waveform(u8), [-1.0, 0.0, 127 / 128], atol=1e-6)


@pytest.mark.parametrize(
    "array, words",
    [
        (np.zeros(0), ["zero length"]),
        (np.zeros((2, 3, 4)), ["shape"]),
        (np.zeros((100, 2)), ["shape", "channel_axis"]),
        (np.zeros(10, np.complex64), ["real numbers"]),
        (np.zeros(10, bool), ["real numbers"]),
        (np.array(["a", "b"]), ["real numbers"]),
        (np.array([0.0, np.nan]), ["nan/inf"]),
    ],
)
def test_validate_rejects(array, words):
    with pytest.raises(AudioError) as info:
        validate_waveform(array, name="utt-17")
    assert "utt-17" in str(info.value)
    for word in words:
        assert word in str(info.value).lower()


def test_resample_rejects_bad_rates():
    with pytest.raises(AudioError, match="positive"):
        resample(np.zeros(100, np.float32), -1, 16000, name="x")


# --- limits read from the header, before any sample buffer is allocated --------------------


def _wav_with_rate(path, rate):
    """A 1 s, 16 kHz PCM16 WAV whose header then claims `rate` Hz (byte rate to match)."""
    soundfile.write(path, np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")
    data[28:32] = (2 * rate).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_header_rate_outside_the_limits(tmp_path):
    path = tmp_path / "slow.wav"
    _wav_with_rate(path, 1)  # 16,000 samples at 1 Hz: 4.4 hours, 256M samples resampled
    assert_audio_error(path, "sampling rate 1 hz", "damaged header")
    _wav_with_rate(path, 8000)
    assert load_audio(path).shape == (32000,)  # a plausible rate is only resampled


def test_flac_header_claiming_2_to_the_33_samples(tmp_path):
    path = tmp_path / "huge.flac"
    soundfile.write(path, np.zeros(1600, np.int16), 16000)
    data = bytearray(path.read_bytes())
    # STREAMINFO follows "fLaC" and a 4-byte block header; its bytes 10..17 hold the rate
    # (20 bits), channels (3), bits per sample (5) and total samples (36 bits).
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | (1 << 33)
    data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    assert_audio_error(path, "536870.9 s of audio", "7200 s limit", "s2t_jax_max_audio_seconds")


def test_duration_limit_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "two_seconds.wav"
    soundfile.write(path, np.zeros(32000, np.int16), 16000)
    assert load_audio(path).shape == (32000,)
    with pytest.raises(AudioError, match="2.0 s of audio, longer than the 1.5 s limit"):
        load_audio(path, max_seconds=1.5)
    monkeypatch.setenv("S2T_JAX_MAX_AUDIO_SECONDS", "1")
    assert_audio_error(path, "1 s limit")
    monkeypatch.setenv("S2T_JAX_MAX_AUDIO_SECONDS", "soon")
    with pytest.raises(AudioError, match="S2T_JAX_MAX_AUDIO_SECONDS='soon'"):
        load_audio(path)


@pytest.mark.parametrize(
    "shape, dtype, words",
    [
        ((10**9, 80), "<f4", "more than the"),  # header claims 320 GB
        ((10, 80, 1), "<f4", "expected float features"),
        ((10, 80), "|O", "expected float features"),
        ((10, 80), "<i4", "expected float features"),
    ],
)
def test_npy_headers_are_checked_before_reading(tmp_path, shape, dtype, words):
    from s2t_jax.frontend.audio_entry import load_features_or_waveform

    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    path = tmp_path / "f.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(np.zeros(800, np.float32).tobytes())
    with pytest.raises(ValueError, match=words):
        load_features_or_waveform("f.npy", tmp_path)
