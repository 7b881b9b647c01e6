"""fairseq S2T checkpoints (`s2t_transformer`, `s2t_conformer`): a `.pt` -> our config and
variables.

fairseq's tensor names are renamed to transformers' (one regex each), then the transformers
table of checkpoints/hf.py converts them, so there is one name table; a Conformer's blocks
convert through checkpoints/fairseq_conformer.py. The config comes from the checkpoint's args /
cfg (fairseq < 0.10 `args`; later `cfg`, plain or as omegaconf objects) plus its tensor shapes
(layer counts, conv kernels, tied output). Fused `in_proj` copies of q/k/v are dropped when the
separate projections are there (split otherwise); a CTC head (`encoder.ctc_proj`) is kept as
params["ctc_proj"]; what our model cannot compute (post-LN layers, learnt positions, an
embedding layer norm) is refused with its name.
"""

import re

import numpy as np
from flax import traverse_util

from s2t_jax.checkpoints import fairseq_conformer
from s2t_jax.checkpoints.hf import hf_state_dict_to_params
from s2t_jax.checkpoints.safe_pickle import load_torch_checkpoint
from s2t_jax.models.config import Speech2TextConfig
from s2t_jax.models.params import abstract_params

# fairseq activation names -> ours: "gelu" is the exact erf form in both, fairseq's
# "gelu_accurate" / "gelu_fast" the tanh approximation.
_ACTIVATIONS = {"gelu_accurate": "gelu_new", "gelu_fast": "gelu_new"}

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


def _refuse_unsupported(args: dict, sd: dict) -> None:
    """fairseq options our model does not compute, each named, instead of a wrong model."""
    problems = []
    if "decoder.layernorm_embedding.weight" in sd or args.get("layernorm_embedding"):
        problems.append(
            "layernorm_embedding (decoder.layernorm_embedding: a layer norm after the decoder's "
            "embeddings, which our decoder does not have)"
        )
    for side in ("encoder", "decoder"):
        if args.get(f"{side}_normalize_before") is False and not (
            side == "encoder" and fairseq_conformer.is_conformer_state(sd)
        ):
            problems.append(f"{side}_normalize_before=False (post-LN layers)")
    if args.get("decoder_learned_pos") or "decoder.embed_positions.weight" in sd:
        problems.append("decoder_learned_pos (learnt decoder positions)")
    if args.get("no_token_positional_embeddings"):
        problems.append("no_token_positional_embeddings")
    if args.get("adaptive_softmax_cutoff"):
        problems.append("adaptive_softmax_cutoff")
    if problems:
        raise ValueError("fairseq checkpoint uses what this model lacks: " + "; ".join(problems))


def _int_arg(args: dict, name: str, default: int) -> int:
    """fairseq 0.12.2 declares some s2t_conformer flags without a type: "80" is 80."""
    value = args.get(name, default)
    return default if value is None else int(value)


def config_from_fairseq(checkpoint: dict) -> Speech2TextConfig:
    """Builds our config from a fairseq S2T checkpoint's args/cfg and its tensor shapes."""
    args = _fairseq_model_args(checkpoint)
    sd = checkpoint["model"]
    _refuse_unsupported(args, sd)
    conformer = fairseq_conformer.is_conformer_state(sd)
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
    n_dec = len({k.split(".")[2] for k in sd if k.startswith("decoder.layers.")})
    if conformer:
        encoder = fairseq_conformer.config_fields(args, sd)
    else:
        encoder = {
            "encoder_layers": len(
                {k.split(".")[2] for k in sd if k.startswith("encoder.transformer_layers.")}
            ),
            "encoder_ffn_dim": int(sd["encoder.transformer_layers.0.fc1.weight"].shape[0]),
        }
    activation = str(args.get("activation_fn", "relu"))
    return Speech2TextConfig(
        vocab_size=int(embed.shape[0]),
        d_model=d_model,
        decoder_layers=n_dec,
        **encoder,
        decoder_ffn_dim=int(sd["decoder.layers.0.fc1.weight"].shape[0]),
        encoder_attention_heads=int(args.get("encoder_attention_heads", 4)),
        decoder_attention_heads=int(args.get("decoder_attention_heads", 4)),
        num_conv_layers=len(kernels),
        conv_kernel_sizes=kernels,
        conv_channels=int(sd["encoder.subsample.conv_layers.0.weight"].shape[0]),
        input_feat_per_channel=_int_arg(args, "input_feat_per_channel", 80),
        input_channels=_int_arg(args, "input_channels", 1),
        activation_function=_ACTIVATIONS.get(activation, activation),
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
_CONFORMER_SHAPE_KEYS = {
    "decoder.embed_tokens.weight": 2,
    "encoder.conformer_layers.0.ffn1.w_1.weight": 2,
    "encoder.conformer_layers.0.conv_module.depthwise_conv.weight": 3,
    "decoder.layers.0.fc1.weight": 2,
    "encoder.subsample.conv_layers.0.weight": 3,
}


def _check_shape_keys(path: str, state: dict) -> None:
    """Names what is missing or malformed before the config is read from the tensor shapes."""
    if not isinstance(state, dict):
        raise ValueError(f"{path}: 'model' is a {type(state).__name__}, not a state dict")
    conformer = fairseq_conformer.is_conformer_state(state)
    keys = _CONFORMER_SHAPE_KEYS if conformer else _SHAPE_KEYS
    missing = sorted(k for k in keys if k not in state)
    if missing:
        raise ValueError(f"{path}: not a fairseq S2T checkpoint: missing keys {missing}")
    for key, rank in keys.items():
        if np.ndim(state[key]) != rank:
            raise ValueError(
                f"{path}: {key} has shape {np.shape(state[key])}, expected {rank} dimensions"
            )


# fairseq 0.12's Transformer layers hold fused copies of their weights for PyTorch's
# BetterTransformer path (`<layer>.in_proj_weight`, `out_proj_*`, `fc1_*`, `fc2_*`): fairseq
# rebuilds them from the separate tensors whenever it loads a checkpoint, so they are dropped.
_FUSED_COPIES = {
    "in_proj": "self_attn.q_proj",
    "out_proj": "self_attn.out_proj",
    "fc1": "fc1",
    "fc2": "fc2",
}


def _unfused(state: dict) -> dict:
    """Drops fused copies of weights that are also there separately; splits an attention's
    fused `in_proj` into q/k/v_proj where it is the only copy (older fairseq)."""
    out = {}
    for name, value in state.items():
        m = re.match(r"^(.*\.)(in_proj|out_proj|fc1|fc2)_(weight|bias)$", name)
        if not m:
            out[name] = value
            continue
        prefix, what, leaf = m.groups()
        if f"{prefix}{_FUSED_COPIES[what]}.{leaf}" in state:
            continue  # a layer's BetterTransformer copy
        if what != "in_proj":
            out[name] = value  # not a copy of anything: reported as unexpected
        elif f"{prefix}q_proj.{leaf}" not in state:
            value = np.asarray(value)
            if value.shape[0] % 3:
                raise ValueError(f"{name} has shape {value.shape}: not three stacked projections")
            for part, chunk in zip("qkv", np.split(value, 3, axis=0)):
                out[f"{prefix}{part}_proj.{leaf}"] = chunk
    return out


def _conformer_variables(state: dict, config: Speech2TextConfig):
    """A Conformer state dict -> (params, batch_stats). The subsampler and decoder convert
    through the transformers table, as a Transformer with no encoder layers (its encoder
    layer norm, which a Conformer does not have, is filled in and dropped again)."""
    blocks, stats, rest = fairseq_conformer.split_conformer_state(state, config.head_dim)
    try:
        linear = {"kernel": np.asarray(rest.pop("encoder.linear.weight")).T}
        linear["bias"] = np.asarray(rest.pop("encoder.linear.bias"))
    except KeyError as e:
        raise ValueError(f"fairseq conformer checkpoint lacks {e.args[0]}") from None
    twin = config.replace(encoder_type="transformer", encoder_layers=0)
    hf_state = fairseq_state_dict_to_hf(rest)
    hf_state["model.encoder.layer_norm.weight"] = np.ones(config.d_model, np.float32)
    hf_state["model.encoder.layer_norm.bias"] = np.zeros(config.d_model, np.float32)
    if config.tie_word_embeddings:
        hf_state.pop("lm_head.weight", None)
    params = hf_state_dict_to_params(hf_state, twin)
    del params["encoder"]["layer_norm"]
    params["encoder"].update(linear=linear, **blocks)
    expected = traverse_util.flatten_dict(abstract_params(config), sep="/")
    got = traverse_util.flatten_dict(params, sep="/")
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(
        f"{k}: {np.shape(got[k])} for {expected[k].shape}"
        for k in set(got) & set(expected)
        if np.shape(got[k]) != expected[k].shape
    )
    if missing or unexpected or wrong:
        raise ValueError(
            f"fairseq conformer checkpoint does not match its config: missing {missing}, "
            f"unexpected {unexpected}, wrong shapes {wrong}"
        )
    want_stats = {f"layers_{i}" for i in range(config.encoder_layers)}
    if set(stats) != want_stats or any(
        set(s["conv_module"]["batch_norm"]) != {"mean", "var"} for s in stats.values()
    ):
        raise ValueError("fairseq conformer checkpoint lacks batch-norm running statistics")
    return params, {"encoder": stats}


def load_fairseq_variables(path: str):
    """fairseq S2T `.pt` -> (config, variables): {"params": ...} and, for a Conformer, its
    batch-norm running statistics as {"batch_stats": ...}. Loads with the allowlisted
    unpickler. A CTC head (`encoder.ctc_proj`) is kept as params["ctc_proj"] ({"kernel",
    "bias"}), which the model does not use yet."""
    checkpoint = load_torch_checkpoint(path)
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise ValueError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    _check_shape_keys(path, checkpoint["model"])
    try:
        config = config_from_fairseq(checkpoint)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    state = _unfused(checkpoint["model"])
    ctc = {
        leaf: np.asarray(state.pop(f"encoder.ctc_proj.{leaf}"))
        for leaf in ("weight", "bias")
        if f"encoder.ctc_proj.{leaf}" in state
    }
    if config.encoder_type == "conformer":
        params, batch_stats = _conformer_variables(state, config)
        variables = {"params": params, "batch_stats": batch_stats}
    else:
        state = fairseq_state_dict_to_hf(state)
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        variables = {"params": hf_state_dict_to_params(state, config)}
    if ctc:
        variables["params"]["ctc_proj"] = {"kernel": ctc["weight"].T, "bias": ctc["bias"]}
    return config, variables


def load_fairseq_checkpoint(path: str):
    """fairseq S2T `.pt` -> (config, params), for the callers that take params alone.

    A Conformer also needs its batch-norm running statistics, which params cannot hold: it is
    refused here, to be read with load_fairseq_variables."""
    config, variables = load_fairseq_variables(path)
    if "batch_stats" in variables:
        raise ValueError(
            f"{path}: a fairseq s2t_conformer checkpoint: its batch-norm running statistics "
            "do not fit (config, params); read it with "
            "s2t_jax.checkpoints.fairseq.load_fairseq_variables"
        )
    return config, variables["params"]
