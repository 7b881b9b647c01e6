"""Speech2TextProcessor: both hub layouts, save/load round trips, file paths, labels, and the
same output as transformers' processor."""

import json

import numpy as np
import pytest

from s2t_jax.frontend.audio import load_audio
from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor
from s2t_jax.frontend.processor import Speech2TextProcessor
from s2t_jax.frontend.tokenizer import Speech2TextTokenizer

SR = 16000
TEXTS = ["kato remi suan", "the lazy dog and the fox.", "qui lo ber"]


@pytest.fixture(scope="module")
def ref_dir(spm_dirs, tmp_path_factory, quiet_transformers):
    """A directory written by transformers 5's Speech2TextProcessor.save_pretrained."""
    d = spm_dirs["mustc"]
    tok = quiet_transformers.Speech2TextTokenizer(
        str(d / "vocab.json"), str(d / "sentencepiece.bpe.model"), lang_codes="mustc", tgt_lang="fr"
    )
    fe = quiet_transformers.Speech2TextFeatureExtractor(padding_value=0.0)
    out = tmp_path_factory.mktemp("ref_processor")
    quiet_transformers.Speech2TextProcessor(fe, tok).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def old_dir(spm_dirs, tmp_path_factory):
    """The older hub layout: preprocessor_config.json + tokenizer files + special_tokens_map.json."""
    d = spm_dirs["unigram"]
    out = tmp_path_factory.mktemp("old_processor")
    for name in ("vocab.json", "sentencepiece.bpe.model"):
        (out / name).write_bytes((d / name).read_bytes())
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "do_ceptral_normalize": True,
                "feature_extractor_type": "Speech2TextFeatureExtractor",
                "feature_size": 80,
                "normalize_means": True,
                "normalize_vars": True,
                "num_mel_bins": 80,
                "padding_side": "right",
                "padding_value": 0.0,
                "return_attention_mask": True,
                "sampling_rate": 16000,
            }
        )
    )
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "do_upper_case": True,
                "do_lower_case": False,
                "tgt_lang": None,
                "lang_codes": None,
                "model_max_length": 1024,
                "tokenizer_class": "Speech2TextTokenizer",
            }
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps(
            {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
        )
    )
    return out


@pytest.fixture(scope="module")
def waves(speech_waves):
    return [speech_waves["libri"], speech_waves["tts"], speech_waves["jfk"]]


def assert_same(got, want):
    assert set(got) == set(want)
    np.testing.assert_array_equal(got["attention_mask"], want["attention_mask"])
    assert (
        np.abs(np.asarray(got["input_features"]) - np.asarray(want["input_features"])).max() < 1e-3
    )
    if "labels" in want:
        np.testing.assert_array_equal(got["labels"], want["labels"])


@pytest.mark.parametrize("layout", ["ref_dir", "old_dir"])
def test_loads_both_layouts_like_transformers(request, layout, waves, quiet_transformers):
    path = request.getfixturevalue(layout)
    if layout == "ref_dir":
        assert (path / "processor_config.json").is_file()
        assert not (path / "preprocessor_config.json").exists()
    ours = Speech2TextProcessor.from_pretrained(path)
    ref = quiet_transformers.Speech2TextProcessor.from_pretrained(str(path))
    kw = dict(sampling_rate=SR, text=TEXTS, padding=True, return_tensors="np")
    got, want = ours(waves, **kw), ref(waves, **kw)
    assert_same(got, want)
    assert got["labels"].shape[0] == len(TEXTS)
    assert (got["labels"][:, -1] == 2).any()  # </s> ends the longest
    assert ours.batch_decode(got["labels"]) == ref.batch_decode(want["labels"])
    assert ours.batch_decode(got["labels"], skip_special_tokens=True) == ref.batch_decode(
        want["labels"], skip_special_tokens=True
    )
    assert ours.decode(got["labels"][0]) == ref.decode(want["labels"][0])
    assert ours.tokenizer.do_upper_case == ref.tokenizer.do_upper_case


@pytest.mark.parametrize("legacy", [False, True])
def test_round_trip(ref_dir, tmp_path, waves, legacy, quiet_transformers):
    proc = Speech2TextProcessor.from_pretrained(ref_dir)
    proc.save_pretrained(tmp_path, legacy_format=legacy)
    assert (tmp_path / "preprocessor_config.json").is_file() == legacy
    assert (tmp_path / "processor_config.json").is_file() == (not legacy)
    assert (tmp_path / "special_tokens_map.json").is_file() == legacy
    again = Speech2TextProcessor.from_pretrained(tmp_path)
    ref = quiet_transformers.Speech2TextProcessor.from_pretrained(str(tmp_path))
    assert again.feature_extractor.to_dict() == proc.feature_extractor.to_dict()
    assert again.tokenizer.tgt_lang == ref.tokenizer.tgt_lang == "fr"
    kw = dict(sampling_rate=SR, text=TEXTS, padding=True, return_tensors="np")
    got = again(waves, **kw)
    assert_same(got, proc(waves, **kw))
    assert_same(got, ref(waves, **kw))


def test_file_paths(ref_dir, speech_files, waves, quiet_transformers):
    ours = Speech2TextProcessor.from_pretrained(ref_dir)
    ref = quiet_transformers.Speech2TextProcessor.from_pretrained(str(ref_dir))
    paths = [speech_files["libri"], str(speech_files["tts"]), speech_files["jfk"]]
    got = ours(paths, padding=True, return_tensors="np")
    assert_same(got, ref(waves, sampling_rate=SR, padding=True, return_tensors="np"))
    single = ours(str(speech_files["jfk"]))
    want = ref(load_audio(speech_files["jfk"]), sampling_rate=SR)
    assert np.abs(single["input_features"][0] - want["input_features"][0]).max() < 1e-3
    mixed = ours([paths[0], waves[1]], sampling_rate=SR, padding=True, return_tensors="np")
    assert_same(mixed, ref(waves[:2], sampling_rate=SR, padding=True, return_tensors="np"))
    with pytest.raises(ValueError, match="no such"):
        ours(["missing.flac"])


def test_audio_only_text_only_and_errors(ref_dir, waves, quiet_transformers):
    ours = Speech2TextProcessor.from_pretrained(ref_dir)
    ref = quiet_transformers.Speech2TextProcessor.from_pretrained(str(ref_dir))
    audio_only = ours(audio=waves[0], sampling_rate=SR)
    assert "labels" not in audio_only and "input_features" in audio_only
    assert ours(text=TEXTS)["input_ids"] == ref(text=TEXTS)["input_ids"]
    labels = ours(waves[:1], sampling_rate=SR, text=TEXTS[0])["labels"]
    assert labels == ref(waves[:1], sampling_rate=SR, text=TEXTS[0])["labels"]
    with pytest.raises(ValueError, match="either"):
        ours()
    with pytest.raises(ValueError, match="8000"):
        ours(waves[0], sampling_rate=8000)
    with pytest.raises(TypeError, match="unexpected"):
        ours(waves[0], sampling_rate=SR, bogus=1)
    assert isinstance(ours.feature_extractor, Speech2TextFeatureExtractor)
    assert isinstance(ours.tokenizer, Speech2TextTokenizer)


def test_from_pretrained_routes_keywords(ref_dir, quiet_transformers):
    """Each keyword reaches the component that takes it, as with transformers' processor."""
    kw = dict(padding_value=1.0, tgt_lang="de", padding_side="left", do_upper_case=True)
    ours = Speech2TextProcessor.from_pretrained(ref_dir, **kw)
    ref = quiet_transformers.Speech2TextProcessor.from_pretrained(str(ref_dir), **kw)
    assert ours.feature_extractor.padding_value == ref.feature_extractor.padding_value == 1.0
    assert ours.feature_extractor.padding_side == ref.feature_extractor.padding_side == "left"
    assert ours.tokenizer.padding_side == ref.tokenizer.padding_side == "left"
    assert ours.tokenizer.tgt_lang == ref.tokenizer.tgt_lang == "de"
    assert ours.tokenizer.do_upper_case is ref.tokenizer.do_upper_case is True
    assert ours(text=TEXTS, padding=True)["input_ids"] == ref(text=TEXTS, padding=True)["input_ids"]
    trunc = Speech2TextProcessor.from_pretrained(ref_dir, truncation_side="left")
    assert trunc.tokenizer.truncation_side == "left"
    with pytest.raises(TypeError, match="bogus"):
        Speech2TextProcessor.from_pretrained(ref_dir, bogus=1)


def test_call_forms_match_transformers(ref_dir, waves, quiet_transformers):
    ours = Speech2TextProcessor.from_pretrained(ref_dir)
    ref = quiet_transformers.Speech2TextProcessor.from_pretrained(str(ref_dir))
    kw = dict(sampling_rate=SR, padding=True, return_tensors="np")
    # audio and text by keyword: features plus the ids as labels
    assert_same(ours(audio=waves, text=TEXTS, **kw), ref(audio=waves, text=TEXTS, **kw))
    # the older positional audio form, with and without text
    assert_same(ours(waves, **kw), ref(waves, **kw))
    assert_same(ours(waves[0], text=TEXTS[0], **kw), ref(waves[0], text=TEXTS[0], **kw))
    # text only: the tokenizer's output; sampling_rate is unused there, in both
    for text_kw in (dict(), dict(padding=True, return_tensors="np"), dict(max_length=4)):
        got = ours(text=TEXTS, sampling_rate=SR, **text_kw)
        want = ref(text=TEXTS, sampling_rate=SR, **text_kw)
        assert set(got) == set(want)
        for key in want:
            as_lists = [
                v.tolist() if isinstance(v, np.ndarray) else v for v in (got[key], want[key])
            ]
            assert as_lists[0] == as_lists[1], key
    # text keywords that only the tokenizer takes: fine with text alone, in both
    for text_kw in (dict(add_special_tokens=False), dict(text_pair=TEXTS[::-1])):
        assert ours(text=TEXTS, **text_kw)["input_ids"] == ref(text=TEXTS, **text_kw)["input_ids"]
    # transformers sends them to the feature extractor too, which fails; we route them.
    with pytest.raises(TypeError):
        ref(waves[0], sampling_rate=SR, text=TEXTS[0], add_special_tokens=False)
    got = ours(waves[0], sampling_rate=SR, text=TEXTS[0], add_special_tokens=False)
    assert got["labels"] == ref.tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    # a keyword that no given input uses is named
    with pytest.raises(TypeError, match="add_special_tokens"):
        ours(waves[0], sampling_rate=SR, add_special_tokens=False)
    # a wrong sampling rate is refused by both
    for proc in (ours, ref):
        with pytest.raises(ValueError, match="8000"):
            proc(waves[0], sampling_rate=8000, text=TEXTS[0])
