"""Checkpoint formats: transformers dirs (safetensors, shards, .bin), ours, fairseq .pt, safety."""

import argparse
import collections
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import transformers

from s2t_jax import Speech2TextConfig, Speech2TextForConditionalGeneration
from s2t_jax.checkpoints.safe_pickle import UnsafeCheckpointError, load_torch_checkpoint
from tests.hf_models import SHAPES, TINY, random_features, save_hf_model

TOL = 1e-4
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _logits_hf(hf, x, mask, ids):
    with torch.no_grad():
        return hf(
            input_features=torch.tensor(x),
            attention_mask=torch.tensor(mask),
            decoder_input_ids=torch.tensor(ids),
        ).logits.numpy()


def _inputs(config):
    x, mask = random_features(2, 41, config.input_feat_per_channel, seed=5, lengths=[41, 29])
    ids = np.random.default_rng(6).integers(3, config.vocab_size, (2, 6))
    ids[:, 0] = 2
    return x, mask, ids


@pytest.fixture(scope="module", params=["tiny", "conv3_gelu_untied"])
def hf_dir(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return save_hf_model(path, seed=3, **SHAPES[request.param]), path


def test_ours_round_trip_and_export_to_transformers(hf_dir, tmp_path):
    hf, path = hf_dir
    (path / "vocab.json").write_text("{}")  # side files travel with the weights
    model = Speech2TextForConditionalGeneration.from_pretrained(path)
    x, mask, ids = _inputs(model.config)
    ref = _logits_hf(hf, x, mask, ids)

    subprocess.run(
        [
            sys.executable,
            "convert_checkpoint.py",
            "--src",
            str(path),
            "--dst",
            str(tmp_path / "ours"),
        ],
        check=True,
        cwd=REPO,
    )
    assert (tmp_path / "ours" / "params").is_dir()
    assert (tmp_path / "ours" / "vocab.json").exists()
    ours = Speech2TextForConditionalGeneration.from_pretrained(tmp_path / "ours")
    np.testing.assert_allclose(np.asarray(ours(x, mask, ids).logits), ref, atol=TOL, rtol=0)

    ours.save_pretrained(tmp_path / "hf", transformers_format=True)
    back = transformers.Speech2TextForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    np.testing.assert_allclose(_logits_hf(back, x, mask, ids), ref, atol=TOL, rtol=0)


def test_sharded_safetensors_and_pytorch_bin(hf_dir, tmp_path):
    hf, path = hf_dir
    x, mask, ids = _inputs(Speech2TextForConditionalGeneration.from_pretrained(path).config)
    ref = _logits_hf(hf, x, mask, ids)

    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    sharded = Speech2TextForConditionalGeneration.from_pretrained(tmp_path / "sharded")
    np.testing.assert_allclose(np.asarray(sharded(x, mask, ids).logits), ref, atol=TOL, rtol=0)

    # A 4.x-era pytorch_model.bin, with the positional tables it used to carry.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hf.config.save_pretrained(bin_dir)
    state = collections.OrderedDict(hf.state_dict())
    state["model.encoder.embed_positions.weights"] = torch.zeros(10, hf.config.d_model)
    state["model.decoder.embed_positions.weights"] = torch.zeros(10, hf.config.d_model)
    torch.save(state, bin_dir / "pytorch_model.bin")
    from_bin = Speech2TextForConditionalGeneration.from_pretrained(bin_dir)
    np.testing.assert_allclose(np.asarray(from_bin(x, mask, ids).logits), ref, atol=TOL, rtol=0)


def _fairseq_state_dict(hf):
    """transformers names -> the fairseq S2TTransformerModel names (the inverse of our table)."""
    out = collections.OrderedDict()
    for name, value in hf.state_dict().items():
        if name == "lm_head.weight":
            out["decoder.output_projection.weight"] = value
            continue
        name = name.removeprefix("model.")
        name = name.replace("encoder.conv.conv_layers.", "encoder.subsample.conv_layers.")
        name = name.replace("encoder.layers.", "encoder.transformer_layers.")
        out[name] = value
    out["encoder.version"] = torch.tensor([3.0])
    out["decoder.version"] = torch.tensor([3.0])
    out["encoder.embed_positions._float_tensor"] = torch.tensor([1.0])
    out["decoder.embed_positions._float_tensor"] = torch.tensor([1.0])
    return out


@pytest.mark.parametrize("style", ["args", "cfg"])
def test_fairseq_checkpoint(hf_dir, tmp_path, style):
    hf, _ = hf_dir
    c = hf.config
    model_args = dict(
        encoder_attention_heads=c.encoder_attention_heads,
        decoder_attention_heads=c.decoder_attention_heads,
        input_feat_per_channel=c.input_feat_per_channel,
        input_channels=1,
        activation_fn=c.activation_function,
        no_scale_embedding=not c.scale_embedding,
        max_source_positions=c.max_source_positions,
        max_target_positions=c.max_target_positions,
        dropout=0.1,
        share_decoder_input_output_embed=c.tie_word_embeddings,
    )
    checkpoint = {"model": _fairseq_state_dict(hf), "optimizer_history": [], "extra_state": {}}
    if style == "args":
        checkpoint["args"] = argparse.Namespace(arch="s2t_transformer_s", **model_args)
    else:
        checkpoint["cfg"] = {"model": dict(model_args, _name="s2t_transformer_s"), "task": {}}
    torch.save(checkpoint, tmp_path / "checkpoint_best.pt")

    model = Speech2TextForConditionalGeneration.from_pretrained(tmp_path / "checkpoint_best.pt")
    assert model.config.tie_word_embeddings == c.tie_word_embeddings
    assert model.config.conv_kernel_sizes == tuple(c.conv_kernel_sizes)
    x, mask, ids = _inputs(model.config)
    np.testing.assert_allclose(
        np.asarray(model(x, mask, ids).logits), _logits_hf(hf, x, mask, ids), atol=TOL, rtol=0
    )


def test_missing_and_unexpected_keys_are_listed(hf_dir, tmp_path):
    hf, path = hf_dir
    bad = tmp_path / "bad"
    bad.mkdir()
    hf.config.save_pretrained(bad)
    state = {k: v for k, v in hf.state_dict().items() if "layers.0.fc1.bias" not in k}
    state["model.encoder.extra_thing.weight"] = torch.zeros(3)
    torch.save(state, bad / "pytorch_model.bin")
    with pytest.raises(ValueError) as err:
        Speech2TextForConditionalGeneration.from_pretrained(bad)
    msg = str(err.value)
    assert "missing keys" in msg and "model.encoder.layers.0.fc1.bias" in msg
    assert "unexpected keys" in msg and "model.encoder.extra_thing.weight" in msg


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    state = {"model.encoder.layer_norm.weight": torch.ones(2), "evil": _Payload(marker)}
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    assert zipfile.is_zipfile(path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to load 'posix.system'|os.system"):
        load_torch_checkpoint(path)
    assert not marker.exists()
    # Sanity: plain pickle.load would have run it; the allowlist is what protects us.
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"system" in data
    assert issubclass(UnsafeCheckpointError, pickle.UnpicklingError)


def test_config_json_keeps_unknown_keys(hf_dir, tmp_path):
    _, path = hf_dir
    data = json.loads((path / "config.json").read_text())
    data["some_future_key"] = {"a": 1}
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = Speech2TextConfig.from_pretrained(tmp_path)
    config.save_pretrained(tmp_path / "out")
    again = json.loads((tmp_path / "out" / "config.json").read_text())
    assert again["some_future_key"] == {"a": 1}
    assert again["d_model"] == data["d_model"]
    assert again["conv_kernel_sizes"] == data["conv_kernel_sizes"]


_STORAGE = object()  # stands for storage record "0" of a crafted checkpoint


class _Record:
    """A tensor record as torch writes it, with whatever offset, shape and strides we like."""

    def __init__(self, offset, size, stride):
        self.args = (offset, size, stride)

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, (_STORAGE, *self.args, False, {}))


def _crafted_checkpoint(path, record, storage_floats=4, storage_file=True):
    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if obj is _STORAGE:
                return ("storage", torch.FloatStorage, "0", "cpu", storage_floats)
            return None

    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump({"model.encoder.layer_norm.weight": record})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", buffer.getvalue())
        if storage_file:
            z.writestr("archive/data/0", np.arange(storage_floats, dtype=np.float32).tobytes())
    return path


def test_tensor_records_are_checked_against_their_storage(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    good = load_torch_checkpoint(_crafted_checkpoint(path, _Record(1, (3,), (1,))))
    np.testing.assert_array_equal(good["model.encoder.layer_norm.weight"], [1.0, 2.0, 3.0])
    transposed = load_torch_checkpoint(_crafted_checkpoint(path, _Record(0, (2, 2), (1, 2))))
    np.testing.assert_array_equal(transposed["model.encoder.layer_norm.weight"], [[0, 2], [1, 3]])
    for record, reason in (
        (_Record(0, (4096,), (1,)), "reaches element 4095 of a storage of 4"),
        (_Record(0, (2,), (2**40,)), "reaches element"),
        (_Record(0, (2,), (-1,)), "strides must be >= 0"),
        (_Record(4, (1,), (1,)), "reaches element 4"),
        (_Record(9, (0,), (1,)), "offset is past the end"),
        (_Record(-1, (1,), (1,)), "non-negative integer"),
        (_Record(0, (8,), (0,)), "more elements than its storage"),
        (_Record(0, (2, 2), (1,)), "differ in length"),
        (_Record(0, ("2",), (1,)), "must be a tuple of integers"),
        (_Record(5, (), ()), "reaches element 5"),
    ):
        with pytest.raises(UnsafeCheckpointError, match=reason) as info:
            load_torch_checkpoint(_crafted_checkpoint(path, record))
        assert str(path) in str(info.value) and "storage 0" in str(info.value)
    with pytest.raises(UnsafeCheckpointError, match="archive/data/0, which the file lacks"):
        load_torch_checkpoint(_crafted_checkpoint(path, _Record(0, (1,), (1,)), storage_file=False))


def test_damaged_weights_name_the_file(hf_dir, tmp_path):
    _, path = hf_dir
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    for damaged in (data[: len(data) // 2], b"\xff" * 20):
        weights.write_bytes(damaged)
        with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors"):
            Speech2TextForConditionalGeneration.from_pretrained(tmp_path)


def test_fairseq_checkpoint_without_its_shape_tensors_is_named(hf_dir, tmp_path):
    hf, _ = hf_dir
    state = _fairseq_state_dict(hf)
    pt = tmp_path / "checkpoint_best.pt"
    without = {k: v for k, v in state.items() if k != "decoder.embed_tokens.weight"}
    torch.save({"model": without, "args": argparse.Namespace(arch="s2t_transformer_s")}, pt)
    with pytest.raises(ValueError, match=r"missing keys \['decoder.embed_tokens.weight'\]"):
        Speech2TextForConditionalGeneration.from_pretrained(pt)
    flat = dict(state, **{"encoder.subsample.conv_layers.0.weight": torch.ones(4)})
    torch.save({"model": flat, "args": argparse.Namespace(arch="s2t_transformer_s")}, pt)
    with pytest.raises(ValueError, match="conv_layers.0.weight has shape .*expected 3"):
        Speech2TextForConditionalGeneration.from_pretrained(pt)


def test_our_params_must_match_config_json(tmp_path):
    config = Speech2TextConfig(**TINY)
    Speech2TextForConditionalGeneration(config).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    for change, message in (
        ({"encoder_ffn_dim": data["encoder_ffn_dim"] + 32}, r"\['fc1'\]\['bias'\] has shape"),
        ({"encoder_layers": data["encoder_layers"] + 1}, "does not hold the arrays config.json"),
    ):
        (tmp_path / "config.json").write_text(json.dumps({**data, **change}))
        with pytest.raises(ValueError, match=message) as info:
            Speech2TextForConditionalGeneration.from_pretrained(tmp_path)
        assert str(tmp_path) in str(info.value)
