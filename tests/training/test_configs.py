"""Every training config builds, and the released shapes have the released parameter counts."""

import functools
import json

import pytest

from configs import common, covost, debug, librispeech, mustc
from s2t_jax.models.params import abstract_params, count_params
from s2t_jax.training.task import model_config_from

# Expected counts of transformers' released checkpoints (tied LibriSpeech, untied MuST-C).
RELEASED = [
    (librispeech, "small", 10000, 29_536_256),  # s2t-small-librispeech-asr: 29.5M
    (librispeech, "medium", 10000, 71_207_936),  # s2t-medium-librispeech-asr: 71.2M
    (librispeech, "large", 10000, 267_834_368),  # s2t-large-librispeech-asr: 267.8M
    (mustc, "st,lang=de", 8000, 31_072_256),  # s2t-small-mustc-en-de-st: 31.1M
    (mustc, "multi_st", 10000, 76_327_936),  # s2t-medium-mustc-multilingual-st: 76.3M
]

VARIANTS = (
    [(librispeech, v) for v in ("small", "medium", "large", "s", "small,runlocal")]
    + [(mustc, f"{task},lang={lang}") for task in ("asr", "st") for lang in mustc.LANGS]
    + [(mustc, "joint_asr"), (mustc, "multi_st"), (mustc, "st,lang=fr,runlocal")]
    + [(covost, f"st,pair={pair}") for pair in covost.PAIRS]
    + [(covost, "asr"), (debug, None), (debug, "runlocal")]
    + [(covost, f"asr,encoder=conformer,pos={pos}") for pos in common.POS_ENC_TYPES]
    + [(covost, "st,pair=de_en,encoder=conformer,pos=rel_pos")]
    + [(librispeech, "small,encoder=conformer,pos=rel_pos,runlocal")]
)


@functools.lru_cache(maxsize=None)
def _count(model_config_json: str) -> int:
    """Parameter count of a model shape (cached: many variants share one shape)."""
    from s2t_jax.models.config import Speech2TextConfig

    return count_params(abstract_params(Speech2TextConfig.from_dict(json.loads(model_config_json))))


def count(model_config) -> int:
    return _count(json.dumps(model_config.to_dict(), sort_keys=True))


@pytest.mark.parametrize(
    "module,arg,vocab,expected", RELEASED, ids=[f"{m.__name__}:{a}" for m, a, _, _ in RELEASED]
)
def test_released_parameter_counts(module, arg, vocab, expected):
    config = module.get_config(arg)
    model_config = model_config_from(config, vocab)
    assert count(model_config) == expected


@pytest.mark.parametrize("module,arg", VARIANTS, ids=[f"{m.__name__}:{a}" for m, a in VARIANTS])
def test_every_config_builds(module, arg):
    config = module.get_config(arg)
    vocab = config.model.vocab_size if config.model.vocab_size > 0 else 300  # char vocabularies
    assert count(model_config_from(config, vocab)) > 0
    assert config.max_tokens >= max(config.data.buckets), "the longest bucket must fit a batch"
    assert config.lr > 0 and config.warmup_updates > 0 and config.max_update > 0


def test_recipe_hyperparameters():
    ls = librispeech.get_config("small")
    assert (ls.lr, ls.max_tokens, ls.update_freq, ls.max_update, ls.warmup_updates) == (
        2e-3,
        40000,
        8,
        300000,
        10000,
    )
    assert ls.model.tie_word_embeddings and ls.label_smoothing == 0.1 and ls.clip_norm == 10.0
    assert librispeech.get_config("large").lr == 5e-4
    assert librispeech.get_config("large").model.dropout == 0.2
    st = mustc.get_config("st,lang=ru")
    assert (st.lr, st.max_update, st.model.vocab_size) == (2e-3, 100000, 8000)
    assert not st.model.tie_word_embeddings and st.data.config_yaml == "config_st.yaml"
    assert mustc.get_config("multi_st").ignore_prefix_size == 1
    cv = covost.get_config("st,pair=en_de")
    assert (cv.max_tokens, cv.max_update, cv.encoder_freezing_updates) == (50000, 30000, 1000)
    assert covost.get_config("asr").model.dropout == 0.15


@pytest.mark.parametrize("pos,millions", [("abs", 42.1), ("rope", 42.1), ("rel_pos", 42.9)])
def test_covost_conformer_counts_match_fairseqs_table(pos, millions):
    """fairseq's CoVoST 2 table: s2t_conformer En ASR has 42.1M (abs, rope) / 42.9M (rel_pos)
    parameters with its character vocabulary (32 entries stand in for it here)."""
    config = covost.get_config(f"asr,encoder=conformer,pos={pos}")
    model = model_config_from(config, 32)
    assert (model.encoder_type, model.pos_enc_type) == ("conformer", pos)
    assert (model.encoder_layers, model.depthwise_conv_kernel_size) == (12, 31)
    assert round(count(model) / 1e6, 1) == millions
    assert (config.lr, config.max_update, config.model.dropout) == (2e-3, 60000, 0.15)


def test_config_arguments_are_checked():
    with pytest.raises(ValueError):
        librispeech.get_config("huge")
    with pytest.raises(ValueError):
        mustc.get_config("st,lang=xx")
    with pytest.raises(ValueError):
        common.parse_arg("nope=1", variant="small")
    with pytest.raises(ValueError, match="pos='xpos'"):
        covost.get_config("asr,encoder=conformer,pos=xpos")
    with pytest.raises(ValueError, match="d_model 256"):
        librispeech.get_config("medium,encoder=conformer")
    with pytest.raises(ValueError, match="encoder='lstm'"):
        librispeech.get_config("small,encoder=lstm")
