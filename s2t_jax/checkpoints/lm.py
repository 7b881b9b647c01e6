"""Language models on disk: ours (lm_config.json + Orbax `params/`) and fairseq `transformer_lm`
`.pt` files, read through the safe unpickler (no code from the file runs).

fairseq's names map onto ours one to one (`decoder.layers.N.self_attn.q_proj` ->
`layers_N/self_attn/q_proj`; torch's Linear weight [out, in] is a Flax kernel [in, out]). What
our LM does not have (adaptive softmax or input, learned positions, a projection between the
embedding and model widths, character embeddings, a layer norm on the embeddings) is refused
with a message naming it, rather than loaded as a different model.
"""

from __future__ import annotations

import os

import numpy as np

from s2t_jax.checkpoints import orbax_io
from s2t_jax.checkpoints.safe_pickle import load_torch_checkpoint
from s2t_jax.models.lm import LMConfig

PARAMS_DIR = "params"


def save_lm(directory: str, config: LMConfig, params) -> None:
    config.save(directory)
    orbax_io.save_params(os.path.join(directory, PARAMS_DIR), params)


def load_lm(path: str) -> tuple[LMConfig, dict]:
    """Our LM directory or a fairseq transformer_lm .pt -> (LMConfig, params float32)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return load_fairseq_lm(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such language model (a directory or a .pt)")
    config = LMConfig.load(path)
    import jax

    from s2t_jax.models.lm import TransformerLM

    ids = np.zeros((1, 1), np.int32)
    target = jax.eval_shape(lambda: TransformerLM(config).init(jax.random.key(0), ids)["params"])
    params = orbax_io.restore_params(os.path.join(path, PARAMS_DIR), target)
    for (key, want), got in zip(
        jax.tree_util.tree_leaves_with_path(target), jax.tree.leaves(params)
    ):
        if tuple(want.shape) != tuple(np.shape(got)):
            raise ValueError(
                f"{path}: params{jax.tree_util.keystr(key)} has shape {np.shape(got)}, "
                f"lm_config.json gives {tuple(want.shape)}"
            )
    return config, params


def _args(checkpoint: dict, path: str) -> dict:
    cfg = checkpoint.get("cfg")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        return dict(cfg["model"])
    if checkpoint.get("args") is not None:
        return dict(vars(checkpoint["args"]))
    raise ValueError(f"{path}: a fairseq checkpoint has 'cfg' or 'args'; this one has neither")


_UNSUPPORTED = {
    "adaptive_softmax_cutoff": "adaptive softmax",
    "adaptive_input": "adaptive input embeddings",
    "decoder_learned_pos": "learned positions",
    "character_embeddings": "character embeddings",
    "layernorm_embedding": "a layer norm on the embeddings",
    "no_token_positional_embeddings": "no positional embeddings",
    "cross_self_attention": "cross self-attention",
}


def load_fairseq_lm(path: str) -> tuple[LMConfig, dict]:
    """A fairseq `transformer_lm` checkpoint -> (LMConfig, params)."""
    checkpoint = load_torch_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ValueError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    args = _args(checkpoint, path)
    state = {k: np.asarray(v, np.float32) for k, v in checkpoint["model"].items()}
    arch = str(args.get("arch", args.get("_name", "")))
    if arch and not arch.startswith("transformer_lm"):
        raise ValueError(f"{path}: arch {arch!r} is not a transformer_lm")
    for name, what in _UNSUPPORTED.items():
        if args.get(name):
            raise ValueError(f"{path}: {what} ({name}) is not supported by our LM")
    if "decoder.embed_tokens.weight" not in state:
        raise ValueError(f"{path}: missing keys ['decoder.embed_tokens.weight']")
    vocab, d_model = state["decoder.embed_tokens.weight"].shape
    for name in ("decoder_input_dim", "decoder_output_dim"):
        if int(args.get(name, d_model) or d_model) != d_model:
            raise ValueError(f"{path}: {name}={args[name]} differs from the embedding width")
    layers = 1 + max(
        (int(k.split(".")[2]) for k in state if k.startswith("decoder.layers.")), default=-1
    )
    shared = "decoder.output_projection.weight" not in state or bool(
        args.get("share_decoder_input_output_embed")
    )
    config = LMConfig(
        vocab_size=int(vocab),
        d_model=int(d_model),
        ffn_dim=int(state["decoder.layers.0.fc1.weight"].shape[0]) if layers else 4 * d_model,
        layers=layers,
        attention_heads=int(args.get("decoder_attention_heads", 8)),
        dropout=float(args.get("dropout", 0.1)),
        attention_dropout=float(args.get("attention_dropout", 0.0)),
        activation_dropout=float(args.get("activation_dropout", args.get("relu_dropout", 0.0))),
        activation_function={"gelu": "gelu", "gelu_accurate": "gelu_new"}.get(
            str(args.get("activation_fn", "relu")), str(args.get("activation_fn", "relu"))
        ),
        normalize_before=bool(args.get("decoder_normalize_before", True)),
        final_layer_norm="decoder.layer_norm.weight" in state,
        share_input_output_embed=shared,
        scale_embedding=not bool(args.get("no_scale_embedding", False)),
        max_positions=int(args.get("max_target_positions", args.get("tokens_per_sample", 1024))),
    )
    return config, _params_from_state(state, config, path)


def _linear(state: dict, prefix: str, path: str, bias: bool = True) -> dict:
    try:
        out = {"kernel": state.pop(f"{prefix}.weight").T}
        if bias:
            out["bias"] = state.pop(f"{prefix}.bias")
    except KeyError as e:
        raise ValueError(f"{path}: missing keys [{e.args[0]!r}]") from None
    return out


def _norm(state: dict, prefix: str, path: str) -> dict:
    try:
        return {"scale": state.pop(f"{prefix}.weight"), "bias": state.pop(f"{prefix}.bias")}
    except KeyError as e:
        raise ValueError(f"{path}: missing keys [{e.args[0]!r}]") from None


def _params_from_state(state: dict, config: LMConfig, path: str) -> dict:
    state = dict(state)
    state.pop("decoder.embed_positions._float_tensor", None)
    state.pop("decoder.version", None)
    params = {"embed_tokens": {"embedding": state.pop("decoder.embed_tokens.weight")}}
    for i in range(config.layers):
        p = f"decoder.layers.{i}"
        params[f"layers_{i}"] = {
            "self_attn": {
                name: _linear(state, f"{p}.self_attn.{name}", path)
                for name in ("q_proj", "k_proj", "v_proj", "out_proj")
            },
            "self_attn_layer_norm": _norm(state, f"{p}.self_attn_layer_norm", path),
            "ffn": {
                "fc1": _linear(state, f"{p}.fc1", path),
                "fc2": _linear(state, f"{p}.fc2", path),
            },
            "final_layer_norm": _norm(state, f"{p}.final_layer_norm", path),
        }
    if config.final_layer_norm:
        params["layer_norm"] = _norm(state, "decoder.layer_norm", path)
    projection = state.pop("decoder.output_projection.weight", None)
    if not config.share_input_output_embed:
        params["output_projection"] = {"kernel": projection.T}
    unexpected = sorted(k for k in state if not k.endswith("._float_tensor"))
    if unexpected:
        raise ValueError(f"{path}: unexpected keys {unexpected[:10]}")
    return params
