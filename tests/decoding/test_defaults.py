"""Defaults come from the model's files as transformers reads them."""

import json

import numpy as np
import pytest

from s2t_jax import Speech2TextForConditionalGeneration
from s2t_jax.decoding.settings import resolve_settings
from tests.decoding.conftest import hf_generate, save_varied_model, speech_features


def _edit_json(path, **changes):
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(changes)
    path.write_text(json.dumps(data))


def _both(path):
    import transformers

    hf = transformers.Speech2TextForConditionalGeneration.from_pretrained(path).eval()
    return hf, Speech2TextForConditionalGeneration.from_pretrained(path)


@pytest.fixture
def model_dir(tmp_path):
    save_varied_model(tmp_path, "wide_untied")
    return tmp_path


def test_released_style_config_json(model_dir):
    """Released checkpoints carry num_beams 5, max_length 200, early_stopping true in
    config.json and no generation_config.json."""
    (model_dir / "generation_config.json").unlink()
    _edit_json(model_dir / "config.json", num_beams=5, max_length=26, early_stopping=True)
    hf, ours = _both(model_dir)
    settings = resolve_settings(ours)
    assert (settings.num_beams, settings.max_length, settings.early_stopping) == (5, 26, True)
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=(1.5, 0.8))
    ref, _ = hf_generate(hf, x, mask)
    np.testing.assert_array_equal(ours.generate(x, mask, buckets=None), ref)


def test_generation_config_json_wins_outright(model_dir):
    """With a generation_config.json, config.json's generation keys are ignored, and an unset
    max_length means transformers' 20 new tokens."""
    _edit_json(model_dir / "config.json", num_beams=5, max_length=26, early_stopping=True)
    _edit_json(model_dir / "generation_config.json", num_beams=3, forced_bos_token_id=9)
    hf, ours = _both(model_dir)
    settings = resolve_settings(ours)
    assert (settings.num_beams, settings.max_length, settings.early_stopping) == (3, 21, False)
    assert settings.forced_bos_token_id == 9
    x, mask = speech_features(ours.config.input_feat_per_channel, seconds=(1.5, 0.8))
    ref, _ = hf_generate(hf, x, mask)
    ids = ours.generate(x, mask, buckets=None)
    np.testing.assert_array_equal(ids, ref)
    assert (ids[:, 1] == 9).all()


def test_kwargs_and_length_rules(model_dir):
    _, ours = _both(model_dir)
    assert resolve_settings(ours, max_new_tokens=7).max_length == 8
    assert resolve_settings(ours, max_length=9, max_new_tokens=7).max_length == 8
    assert resolve_settings(ours, min_new_tokens=4).min_length == 5
    assert resolve_settings(ours, num_beams=2, max_length=12).num_beams == 2
    with pytest.raises(ValueError, match="num_return_sequences"):
        ours.generate(np.zeros((1, 32, 80), np.float32), num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="max_length"):
        ours.generate(np.zeros((1, 32, 80), np.float32), max_length=1)
    with pytest.raises(TypeError, match="num_beam_groups"):
        ours.generate(np.zeros((1, 32, 80), np.float32), num_beam_groups=2)
    with pytest.raises(ValueError, match="input_features"):
        ours.generate(np.zeros((1, 32, 7), np.float32))


def test_unknown_settings_are_refused(model_dir):
    """A misspelt setting is an error, not silently the default (generate, make_generate_fn)."""
    from s2t_jax.decoding.search import make_generate_fn

    model = Speech2TextForConditionalGeneration.from_pretrained(model_dir)
    with pytest.raises(TypeError, match="num_beam"):
        resolve_settings(model, num_beam=4)
    with pytest.raises(TypeError, match="return_scores"):
        make_generate_fn(model.config, return_scores=True)
