"""fairseq S2T checkpoints: a `.pt` -> (our config, our params).

fairseq's tensor names are renamed to transformers' (one regex each), then the transformers
table of checkpoints/hf.py converts them, so there is one name table. The config comes from the
checkpoint's args / cfg plus its tensor shapes (layer counts, conv kernels, tied output).
"""

import re

import numpy as np

from s2t_jax.checkpoints.hf import hf_state_dict_to_params
from s2t_jax.checkpoints.safe_pickle import load_torch_checkpoint
from s2t_jax.models.config import Speech2TextConfig

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


# The tensors the config is read from, with their rank.
_SHAPE_KEYS = {
    "decoder.embed_tokens.weight": 2,
    "encoder.transformer_layers.0.fc1.weight": 2,
    "decoder.layers.0.fc1.weight": 2,
    "encoder.subsample.conv_layers.0.weight": 3,
}


def _check_shape_keys(path: str, state: dict) -> None:
    """Names what is missing or malformed before the config is read from the tensor shapes."""
    if not isinstance(state, dict):
        raise ValueError(f"{path}: 'model' is a {type(state).__name__}, not a state dict")
    missing = sorted(k for k in _SHAPE_KEYS if k not in state)
    if missing:
        raise ValueError(f"{path}: not a fairseq S2T checkpoint: missing keys {missing}")
    for key, rank in _SHAPE_KEYS.items():
        if np.ndim(state[key]) != rank:
            raise ValueError(
                f"{path}: {key} has shape {np.shape(state[key])}, expected {rank} dimensions"
            )


def load_fairseq_checkpoint(path: str):
    """fairseq S2T `.pt` -> (config, params). Loads with the allowlisted unpickler."""
    checkpoint = load_torch_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    _check_shape_keys(path, checkpoint["model"])
    config = config_from_fairseq(checkpoint)
    state = fairseq_state_dict_to_hf(checkpoint["model"])
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return config, hf_state_dict_to_params(state, config)
