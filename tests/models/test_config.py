"""Speech2TextConfig validation and the released architectures' parameter shapes."""

import json

import pytest
import torch
import transformers
from flax import traverse_util

from s2t_jax import Speech2TextConfig
from s2t_jax.checkpoints.hf import _ours_to_hf_name
from s2t_jax.models.params import abstract_params, count_params


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_conv_layers=3, conv_kernel_sizes=(5, 5)), "len(conv_kernel_sizes)=2"),
        (dict(d_model=250, encoder_attention_heads=4), "divisible by encoder_attention_heads"),
        (dict(decoder_attention_heads=3), "divisible by decoder_attention_heads"),
        (dict(activation_function="nope"), "activation_function='nope'"),
        (dict(pad_token_id=20000), "pad_token_id=20000"),
        (dict(dropout=1.5), "dropout=1.5"),
        (dict(dtype="int8"), "dtype='int8'"),
    ],
)
def test_inconsistent_values_are_rejected(kwargs, message):
    with pytest.raises(ValueError) as err:
        Speech2TextConfig(**kwargs)
    assert message in str(err.value)


def test_every_transformers_field_is_carried():
    reference = transformers.Speech2TextConfig().to_dict()
    ours = Speech2TextConfig().to_dict()
    for key in (
        "vocab_size encoder_layers encoder_ffn_dim encoder_attention_heads decoder_layers "
        "decoder_ffn_dim decoder_attention_heads d_model dropout attention_dropout "
        "activation_dropout activation_function scale_embedding pad_token_id bos_token_id "
        "eos_token_id decoder_start_token_id max_source_positions max_target_positions "
        "num_conv_layers conv_kernel_sizes conv_channels input_feat_per_channel input_channels "
        "tie_word_embeddings init_std encoder_layerdrop decoder_layerdrop use_cache"
    ).split():
        assert key in ours, key
        assert ours[key] == (
            list(reference[key]) if isinstance(reference[key], tuple) else reference[key]
        ), key


SMALL = dict(d_model=256, encoder_attention_heads=4, decoder_attention_heads=4)
MEDIUM = dict(d_model=512, encoder_attention_heads=8, decoder_attention_heads=8)
LARGE = dict(
    d_model=1024,
    encoder_attention_heads=16,
    decoder_attention_heads=16,
    encoder_ffn_dim=4096,
    decoder_ffn_dim=4096,
)
RELEASED = {
    "s2t-small-librispeech-asr": (dict(SMALL), 29.5),
    "s2t-medium-librispeech-asr": (dict(MEDIUM), 71.2),
    "s2t-large-librispeech-asr": (dict(LARGE), 267.8),
    "s2t-small-mustc-en-de-st": (dict(SMALL, vocab_size=8000, tie_word_embeddings=False), 31.1),
    "s2t-medium-mustc-multilingual-st": (dict(MEDIUM, tie_word_embeddings=False), 76.3),
}


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_shapes_match_transformers(name):
    kwargs, millions = RELEASED[name]
    ours = abstract_params(Speech2TextConfig(**kwargs))
    assert round(count_params(ours) / 1e6, 1) == millions
    with torch.device("meta"):
        ref = transformers.Speech2TextForConditionalGeneration(
            transformers.Speech2TextConfig(**kwargs)
        )
    ref_shapes = {
        k: tuple(v.shape) for k, v in ref.state_dict().items() if "embed_positions" not in k
    }
    if kwargs.get("tie_word_embeddings", True):
        ref_shapes.pop("lm_head.weight")
    assert sum(int(torch.Size(s).numel()) for s in ref_shapes.values()) == count_params(ours)
    for path, leaf in traverse_util.flatten_dict(ours).items():
        shape = ref_shapes.pop(_ours_to_hf_name(path))
        expected = shape[::-1] if path[-1] == "kernel" else shape
        assert tuple(leaf.shape) == expected, path
    assert not ref_shapes


@pytest.mark.parametrize(
    "change, message",
    [
        ({"encoder_layers": 1e9}, "encoder_layers=1000000000.0 must be an integer"),
        ({"encoder_layers": 10**9}, "encoder_layers=1000000000 is above the limit of 1000"),
        ({"conv_kernel_sizes": [0, 0]}, r"conv_kernel_sizes=\[0, 0\] must be a list of integers"),
        ({"conv_kernel_sizes": None}, "conv_kernel_sizes=None must be a list"),
        ({"d_model": "32"}, "d_model='32' must be an integer"),
        ({"dropout": "0.1"}, "dropout='0.1' must be a number"),
        ({"tie_word_embeddings": "yes"}, "tie_word_embeddings='yes' must be true or false"),
    ],
)
def test_config_json_types_and_sizes_are_checked_first(tmp_path, change, message):
    """Refused with the file and the field named, before any array is allocated."""
    data = {**Speech2TextConfig().to_dict(), **change}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as info:
        Speech2TextConfig.from_pretrained(tmp_path)
    assert str(tmp_path / "config.json") in str(info.value)


def test_config_json_must_be_an_object(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: a Speech2Text config must be a JSON object"):
        Speech2TextConfig.from_pretrained(tmp_path)


# --- transformers' PretrainedConfig API --------------------------------------------------------

ALIASES = {"hidden_size": 64, "num_attention_heads": 8, "num_hidden_layers": 3}


def test_aliases_read_set_and_load_as_in_transformers():
    ours, ref = Speech2TextConfig(), transformers.Speech2TextConfig()
    for alias in ALIASES:
        assert getattr(ours, alias) == getattr(ref, alias), alias
    for alias, value in ALIASES.items():
        setattr(ours, alias, value)
        setattr(ref, alias, value)
    assert (ours.d_model, ours.encoder_attention_heads, ours.encoder_layers) == (
        ref.d_model,
        ref.encoder_attention_heads,
        ref.encoder_layers,
    )
    data = {**transformers.Speech2TextConfig().to_dict(), **ALIASES}
    ours, ref = Speech2TextConfig.from_dict(data), transformers.Speech2TextConfig.from_dict(data)
    for alias in ALIASES:
        assert getattr(ours, alias) == getattr(ref, alias) == ALIASES[alias], alias
        assert alias not in ours.to_dict() and alias not in ref.to_dict()


def test_to_dict_and_json_match_transformers(tmp_path):
    kwargs = dict(d_model=64, encoder_attention_heads=8, vocab_size=100, foo="bar")
    ref = transformers.Speech2TextConfig(**kwargs)
    ours = Speech2TextConfig.from_dict(kwargs)
    for use_diff in (True, False):
        want = json.loads(ref.to_json_string(use_diff=use_diff))
        got = json.loads(ours.to_json_string(use_diff=use_diff))
        # transformers' "dtype" is torch's; ours is the compute dtype (see config.py).
        shared = set(want) - {"transformers_version", "dtype", "architectures"}
        assert shared <= set(got), shared - set(got)
        assert {k: got[k] for k in shared} == {k: want[k] for k in shared}
    ours.to_json_file(tmp_path / "c.json")
    assert (tmp_path / "c.json").read_text() == ours.to_json_string()
    assert ours.to_dict()["foo"] == ref.to_dict()["foo"] == "bar"


def test_unknown_keys_are_kept_both_ways(tmp_path):
    ref = transformers.Speech2TextConfig(foo={"a": 1}, vocab_size=100)
    ref.save_pretrained(tmp_path / "theirs")
    ours = Speech2TextConfig.from_pretrained(tmp_path / "theirs")
    assert ours.foo == {"a": 1} and ours.extra["foo"] == {"a": 1}
    # Set on the object, as transformers allows, and not validated (they are not ours).
    ours.bar = "not a number"
    ref.bar = "not a number"
    assert ours.to_dict()["bar"] == ref.to_dict()["bar"]
    ours.save_pretrained(tmp_path / "ours", transformers_only=True)
    back = transformers.Speech2TextConfig.from_pretrained(tmp_path / "ours")
    assert (back.foo, back.bar, back.vocab_size) == ({"a": 1}, "not a number", 100)
    for config in (ours, ref):
        with pytest.raises(AttributeError):
            config.no_such_key  # noqa: B018


def test_from_pretrained_subfolder(tmp_path):
    transformers.Speech2TextConfig(vocab_size=123).save_pretrained(tmp_path / "a" / "b")
    ref = transformers.Speech2TextConfig.from_pretrained(tmp_path, subfolder="a/b")
    ours = Speech2TextConfig.from_pretrained(tmp_path, subfolder="a/b")
    assert ours.vocab_size == ref.vocab_size == 123
    # (transformers returns a default config here; a missing config.json is an error for us.)
    with pytest.raises(FileNotFoundError, match="missing"):
        Speech2TextConfig.from_pretrained(tmp_path, subfolder="missing")
