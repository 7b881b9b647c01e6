"""Checkpoint conversion: transformers and fairseq state dicts <-> our params tree.

A name table plus per-tensor hooks (transpose a Linear, reverse a Conv1d's axes), in the MaxText
style. fairseq names are first renamed to transformers names, so there is one table. Positional
tables and `version` keys are ignored; any other missing or unexpected key is an error that lists
them, because a silently dropped tensor is a wrong model.
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


def load_hf_state_dict(path: str) -> dict[str, np.ndarray]:
    """State dict from a transformers dir: model.safetensors, a sharded index, or a .bin."""
    from safetensors.numpy import load_file

    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    bin_file = os.path.join(path, "pytorch_model.bin")
    if os.path.exists(single):
        return load_file(single)
    if os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(os.path.join(path, shard)))
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


# --- fairseq -----------------------------------------------------------------------------------

_FAIRSEQ_RENAMES = [
    (re.compile(r"^encoder\.subsample\.conv_layers\."), "model.encoder.conv.conv_layers."),
    (re.compile(r"^encoder\.transformer_layers\."), "model.encoder.layers."),
    (re.compile(r"^encoder\.layer_norm\."), "model.encoder.layer_norm."),
    (re.compile(r"^decoder\.output_projection\.weight$"), "lm_head.weight"),
    (re.compile(r"^decoder\."), "model.decoder."),
]


def fairseq_state_dict_to_hf(state_dict: dict) -> dict:
    out = {}
    for name, value in state_dict.items():
        new = name
        for pattern, repl in _FAIRSEQ_RENAMES:
            if pattern.search(new):
                new = pattern.sub(repl, new)
                break
        out[new] = value
    return out


def _fairseq_model_args(checkpoint: dict) -> dict:
    if checkpoint.get("cfg") is not None:
        cfg = checkpoint["cfg"]
        model = cfg.get("model") if isinstance(cfg, dict) else getattr(cfg, "model", None)
        if model is None:
            raise ValueError("fairseq checkpoint 'cfg' has no 'model' section")
        return dict(vars(model)) if not isinstance(model, dict) else dict(model)
    if checkpoint.get("args") is not None:
        return dict(vars(checkpoint["args"]))
    raise ValueError("fairseq checkpoint has neither 'cfg' nor 'args'; cannot build a config")


def config_from_fairseq(checkpoint: dict) -> Speech2TextConfig:
    """Builds our config from a fairseq S2T checkpoint's args/cfg and its tensor shapes."""
    args = _fairseq_model_args(checkpoint)
    sd = checkpoint["model"]
    convs = sorted(
        int(m.group(1))
        for k in sd
        if (m := re.match(r"encoder\.subsample\.conv_layers\.(\d+)\.weight$", k))
    )
    kernels = tuple(int(sd[f"encoder.subsample.conv_layers.{i}.weight"].shape[2]) for i in convs)
    embed = sd["decoder.embed_tokens.weight"]
    d_model = int(embed.shape[1])
    tied = "decoder.output_projection.weight" not in sd or np.array_equal(
        np.asarray(sd["decoder.output_projection.weight"]), np.asarray(embed)
    )
    n_enc = len({k.split(".")[2] for k in sd if k.startswith("encoder.transformer_layers.")})
    n_dec = len({k.split(".")[2] for k in sd if k.startswith("decoder.layers.")})
    return Speech2TextConfig(
        vocab_size=int(embed.shape[0]),
        d_model=d_model,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_ffn_dim=int(sd["encoder.transformer_layers.0.fc1.weight"].shape[0]),
        decoder_ffn_dim=int(sd["decoder.layers.0.fc1.weight"].shape[0]),
        encoder_attention_heads=int(args.get("encoder_attention_heads", 4)),
        decoder_attention_heads=int(args.get("decoder_attention_heads", 4)),
        num_conv_layers=len(kernels),
        conv_kernel_sizes=kernels,
        conv_channels=int(sd["encoder.subsample.conv_layers.0.weight"].shape[0]),
        input_feat_per_channel=int(args.get("input_feat_per_channel", 80)),
        input_channels=int(args.get("input_channels", 1)),
        activation_function=str(args.get("activation_fn", "relu")),
        dropout=float(args.get("dropout", 0.1)),
        attention_dropout=float(args.get("attention_dropout", 0.0)),
        activation_dropout=float(args.get("activation_dropout", args.get("relu_dropout", 0.0))),
        scale_embedding=not bool(args.get("no_scale_embedding", False)),
        max_source_positions=int(args.get("max_source_positions", 6000)),
        max_target_positions=int(args.get("max_target_positions", 1024)),
        tie_word_embeddings=bool(tied),
    )


def load_fairseq_checkpoint(path: str):
    """fairseq S2T `.pt` -> (config, params). Loads with the allowlisted unpickler."""
    checkpoint = load_torch_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    config = config_from_fairseq(checkpoint)
    state = fairseq_state_dict_to_hf(checkpoint["model"])
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return config, hf_state_dict_to_params(state, config)


def convert_checkpoint(src: str, dst: str, to: str = "s2t_jax") -> None:
    """Any source (transformers dir, ours, fairseq .pt, training workdir) -> ours or transformers.

    Tokenizer and feature-extractor files next to the source are copied along.
    """
    from s2t_jax.checkpoints.export import export_workdir, is_training_workdir
    from s2t_jax.modeling import Speech2TextForConditionalGeneration

    if to not in ("s2t_jax", "transformers"):
        raise ValueError(f"--to must be 's2t_jax' or 'transformers', got {to!r}")
    if os.path.isdir(src) and is_training_workdir(src):
        export_workdir(src, dst, transformers_format=(to == "transformers"))
        return
    model = Speech2TextForConditionalGeneration.from_pretrained(src)
    if model.source_dir is None and os.path.isfile(src):
        model.source_dir = os.path.dirname(os.path.abspath(src))
    model.save_pretrained(dst, transformers_format=(to == "transformers"))
