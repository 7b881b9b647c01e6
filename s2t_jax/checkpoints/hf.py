"""transformers state dicts <-> our params tree, and transformers directories on disk.

A name table plus per-tensor hooks (transpose a Linear, reverse a Conv1d's axes), in the MaxText
style. fairseq names are first renamed to transformers names (checkpoints/fairseq.py), so this is
the one table. Positional tables and `version` keys are ignored; any other missing or unexpected
key is an error that lists them, because a silently dropped tensor is a wrong model.
"""

import json
import os
import re

import numpy as np
from flax import traverse_util

from s2t_jax.checkpoints.safe_pickle import load_torch_checkpoint
from s2t_jax.models.config import Speech2TextConfig
from s2t_jax.models.params import abstract_params

_IGNORED = re.compile(r"(embed_positions\.|\.version$|^version$|_float_tensor$)")

# transformers sub-module name -> our sub-module path, for the parts whose names differ.
_RENAMES = [
    (re.compile(r"\.layers\.(\d+)\."), r".layers_\1."),
    (re.compile(r"conv_layers\.(\d+)\."), r"conv_layers_\1."),
    (re.compile(r"\.fc([12])\."), r".ffn.fc\1."),
]


def _hf_to_ours_name(name: str) -> tuple[str, ...] | None:
    """'model.encoder.layers.0.fc1.weight' -> ('encoder', 'layers_0', 'ffn', 'fc1', 'kernel')."""
    if name.startswith("model."):
        name = name[len("model.") :]
    for pattern, repl in _RENAMES:
        name = pattern.sub(repl, name)
    *module, leaf = name.split(".")
    if leaf == "bias":
        return (*module, "bias")
    if leaf != "weight":
        return None
    if "layer_norm" in module[-1]:
        return (*module, "scale")
    if module[-1] == "embed_tokens":
        return (*module, "embedding")
    return (*module, "kernel")


def _ours_to_hf_name(path: tuple[str, ...]) -> str:
    *module, leaf = path
    name = ".".join(module)
    name = re.sub(r"\.ffn\.fc([12])", r".fc\1", name)
    name = re.sub(r"layers_(\d+)", r"layers.\1", name)
    name = re.sub(r"conv_layers_(\d+)", r"conv_layers.\1", name)
    if not name.startswith("lm_head"):
        name = "model." + name
    return name + (".bias" if leaf == "bias" else ".weight")


def _to_ours(value: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
    if path[-1] == "kernel":
        if value.ndim == 3:  # Conv1d [out, in, k] -> [k, in, out]
            return value.transpose(2, 1, 0)
        return value.T  # Linear [out, in] -> [in, out]
    return value


def _to_hf(value: np.ndarray, path: tuple[str, ...]) -> np.ndarray:
    if path[-1] == "kernel":
        return value.transpose(2, 1, 0) if value.ndim == 3 else value.T
    return value


def _expected_shapes(config: Speech2TextConfig, with_lm_head: bool) -> dict:
    tree = abstract_params(config, with_lm_head)
    return {k: v.shape for k, v in traverse_util.flatten_dict(tree).items()}


def hf_state_dict_to_params(state_dict: dict, config: Speech2TextConfig, with_lm_head=True):
    """transformers state dict (numpy arrays) -> our nested params dict (numpy, float32 kept)."""
    expected = _expected_shapes(config, with_lm_head)
    flat, unexpected = {}, []
    lm_head = None
    for name, value in state_dict.items():
        if _IGNORED.search(name):
            continue
        if name == "lm_head.weight" and (config.tie_word_embeddings or not with_lm_head):
            lm_head = value  # tied: it is the embedding; checked below
            continue
        path = _hf_to_ours_name(name)
        if path is None or path not in expected:
            unexpected.append(name)
            continue
        value = _to_ours(np.asarray(value), path)
        if value.shape != expected[path]:
            raise ValueError(
                f"checkpoint tensor {name} has shape {value.shape} after conversion, but the "
                f"config expects {expected[path]} for {'/'.join(path)}"
            )
        flat[path] = value
    missing = sorted(_ours_to_hf_name(p) for p in expected if p not in flat)
    if missing or unexpected:
        raise ValueError(
            "checkpoint does not match the config: "
            + (f"missing keys {missing}" if missing else "")
            + ("; " if missing and unexpected else "")
            + (f"unexpected keys {sorted(unexpected)}" if unexpected else "")
        )
    if lm_head is not None and config.tie_word_embeddings:
        embed = flat[("decoder", "embed_tokens", "embedding")]
        if lm_head.shape != embed.shape or not np.array_equal(np.asarray(lm_head), embed):
            raise ValueError(
                "config says tie_word_embeddings=True but lm_head.weight differs from "
                "model.decoder.embed_tokens.weight"
            )
    return traverse_util.unflatten_dict(flat)


def params_to_hf_state_dict(params, config: Speech2TextConfig) -> dict[str, np.ndarray]:
    """Our params -> transformers state dict (numpy). Tied models get lm_head = embedding."""
    out = {}
    for path, value in traverse_util.flatten_dict(params).items():
        out[_ours_to_hf_name(path)] = np.ascontiguousarray(_to_hf(np.asarray(value), path))
    if config.tie_word_embeddings and "model.decoder.embed_tokens.weight" in out:
        out["lm_head.weight"] = out["model.decoder.embed_tokens.weight"]
    return out


# --- transformers directories ----------------------------------------------------------------


def _load_safetensors(file: str) -> dict[str, np.ndarray]:
    """One safetensors file; a damaged one (truncated, bad header) is an error naming it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{file}: not a readable safetensors file ({e})") from e


def load_hf_state_dict(path: str) -> dict[str, np.ndarray]:
    """State dict from a transformers dir: model.safetensors, a sharded index, or a .bin."""
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.exists(single):
        return _load_safetensors(single)
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(_load_safetensors(os.path.join(path, shard)))
        return state
    if os.path.exists(bin_file):
        state = load_torch_checkpoint(bin_file)
        return dict(state.get("state_dict", state)) if isinstance(state, dict) else state
    raise FileNotFoundError(
        f"{path}: no weights found (expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin)"
    )


def save_hf_dir(params, config: Speech2TextConfig, path: str) -> None:
    """Writes a transformers-loadable dir: config.json + model.safetensors."""
    from safetensors.numpy import save_file

    os.makedirs(path, exist_ok=True)
    state = params_to_hf_state_dict(params, config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # safetensors refuses shared tensors; HF re-ties
    state = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}
    save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(path, transformers_only=True)
