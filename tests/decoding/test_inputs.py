"""generate() refuses inputs that would otherwise decode to ids as if nothing were wrong, with a
ValueError naming the argument (and the row)."""

import numpy as np
import pytest

from s2t_jax import Speech2TextConfig, Speech2TextForConditionalGeneration
from tests.hf_models import TINY


@pytest.fixture(scope="module")
def model():
    return Speech2TextForConditionalGeneration(Speech2TextConfig(**TINY), seed=0)


def _features(batch=2, frames=16):
    return np.random.default_rng(0).standard_normal((batch, frames, 80)).astype(np.float32)


def test_bad_inputs_are_named(model):
    x = _features()
    nan = x.copy()
    nan[1, 3, 5] = np.nan
    inf = x.copy()
    inf[0, 0, 0] = np.inf
    cases = [
        (dict(input_features=x[:0]), "no utterance"),
        (dict(input_features=x[:, :0]), "no frame"),
        (dict(input_features=nan), "row 1 holds NaN or Inf"),
        (dict(input_features=inf), "row 0 holds NaN or Inf"),
        (dict(input_features="features"), "must be a numeric array"),
        (dict(input_features=x[..., :40]), r"must be \[batch, frames, 80\]"),
        (dict(input_features=x, attention_mask=np.array([[1] * 16, [0] * 16])), "row 1 has no"),
        (dict(input_features=x, attention_mask=np.ones((2, 15))), "attention_mask has 15 frames"),
        (dict(input_features=x, length_penalty=float("nan")), "length_penalty=nan"),
        (dict(input_features=x, pad_token_id=TINY["vocab_size"]), "pad_token_id=64 must be in"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            model.generate(**kwargs, max_new_tokens=3)


def test_good_inputs_still_decode(model):
    x = _features()
    mask = np.ones((2, 16), np.int32)
    mask[1, 10:] = 0
    ids = model.generate(x, attention_mask=mask, max_new_tokens=3)
    assert ids.shape[0] == 2 and ids.dtype == np.int32
