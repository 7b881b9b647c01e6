"""fairseq `s2t_conformer` checkpoints: the Conformer blocks' names, and the config they imply.

The subsampler and decoder of a Conformer checkpoint are those of `s2t_transformer` and convert
through the one transformers table (checkpoints/fairseq.py -> checkpoints/hf.py). The blocks
convert here: fairseq's names map to our module paths one regex each, Linear and Conv1d weights
are transposed as everywhere else, batch norm's running statistics go to the `batch_stats`
collection, and the attention's derived buffers (rotary `inv_freq`) and counters
(`num_batches_tracked`) are checked or dropped.
"""

from __future__ import annotations

import re

import numpy as np

_LAYER = re.compile(r"^encoder\.conformer_layers\.(\d+)\.(.+)$")

# fairseq sub-name -> (our sub-path, how the tensor converts). ESPnet's attention calls its
# projections linear_q/k/v/out, fairseq's MultiheadAttention q/k/v/out_proj: both are ours.
_BLOCK_TABLE = [
    (r"(ffn[12])\.layer_norm\.(weight|bias)", r"\1/layer_norm/\2", "norm"),
    (r"(ffn[12])\.(w_[12])\.(weight|bias)", r"\1/\2/\3", "linear"),
    (r"self_attn_layer_norm\.(weight|bias)", r"self_attn_layer_norm/\1", "norm"),
    (r"final_layer_norm\.(weight|bias)", r"final_layer_norm/\1", "norm"),
    (r"self_attn\.(?:linear_([qkv])|([qkv])_proj)\.(weight|bias)", r"self_attn/\1\2_proj/\3",
     "linear"),
    (r"self_attn\.(?:linear_out|out_proj)\.(weight|bias)", r"self_attn/out_proj/\1", "linear"),
    (r"self_attn\.linear_pos\.weight", r"self_attn/linear_pos/weight", "linear"),
    (r"self_attn\.(pos_bias_[uv])", r"self_attn/\1", "as_is"),
    (r"conv_module\.layer_norm\.(weight|bias)", r"conv_module/layer_norm/\1", "norm"),
    (r"conv_module\.(pointwise_conv[12]|depthwise_conv)\.weight", r"conv_module/\1/weight", "conv"),
    (r"conv_module\.batch_norm\.(weight|bias)", r"conv_module/batch_norm/\1", "norm"),
    (r"conv_module\.batch_norm\.running_(mean|var)", r"conv_module/batch_norm/\1", "stats"),
]  # fmt: skip
_BLOCK_TABLE = [(re.compile(f"^{p}$"), repl, kind) for p, repl, kind in _BLOCK_TABLE]
_DROPPED = re.compile(
    r"(conv_module\.batch_norm\.num_batches_tracked|self_attn\.rotary_emb\.inv_freq)$"
)

# Our leaf name for each fairseq leaf, by conversion kind.
_LEAVES = {
    ("norm", "weight"): "scale",
    ("norm", "bias"): "bias",
    ("linear", "weight"): "kernel",
    ("linear", "bias"): "bias",
    ("conv", "weight"): "kernel",
}


def is_conformer_state(state: dict) -> bool:
    return any(k.startswith("encoder.conformer_layers.") for k in state)


def pos_enc_type(args: dict, state: dict) -> str:
    """The position scheme, from the args and checked against the tensors: a checkpoint whose
    args and weights disagree is refused rather than loaded as another model."""
    declared = str(args.get("pos_enc_type") or "abs")
    rel = any(k.endswith(".self_attn.linear_pos.weight") for k in state)
    rope = any(k.endswith(".self_attn.rotary_emb.inv_freq") for k in state)
    espnet = any(k.endswith(".self_attn.linear_q.weight") for k in state)
    if declared not in ("abs", "rope", "rel_pos"):
        raise ValueError(f"fairseq s2t_conformer pos_enc_type={declared!r} is not supported")
    if declared == "rope" and not espnet:
        # fairseq then builds its plain attention with no positions anywhere in the encoder.
        raise ValueError(
            "fairseq s2t_conformer with pos_enc_type='rope' but attn_type other than 'espnet' "
            "has no position information; this model is not supported"
        )
    found = "rel_pos" if rel else "rope" if rope else "abs"
    if found != declared:
        raise ValueError(
            f"fairseq s2t_conformer args say pos_enc_type={declared!r}, but the weights are "
            f"those of {found!r}"
        )
    return declared


def config_fields(args: dict, state: dict) -> dict:
    """The Speech2TextConfig fields a Conformer checkpoint sets beyond the Transformer's."""
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    if layers != set(range(len(layers))):
        raise ValueError(f"fairseq conformer layers {sorted(layers)} are not 0..n-1")
    kernel = state["encoder.conformer_layers.0.conv_module.depthwise_conv.weight"]
    return {
        "encoder_type": "conformer",
        "pos_enc_type": pos_enc_type(args, state),
        "encoder_layers": len(layers),
        "encoder_ffn_dim": int(state["encoder.conformer_layers.0.ffn1.w_1.weight"].shape[0]),
        "depthwise_conv_kernel_size": int(np.shape(kernel)[2]),
    }


def _convert(value: np.ndarray, kind: str, leaf: str) -> np.ndarray:
    value = np.asarray(value)
    if kind == "linear" and leaf == "weight":
        return value.T  # Linear [out, in] -> [in, out]
    if kind == "conv":
        return value.transpose(2, 1, 0)  # Conv1d [out, in / groups, k] -> [k, in / groups, out]
    return value


def _lookup(sub: str):
    """A block's tensor name -> (our module path, fairseq leaf, conversion kind), or None."""
    for pattern, repl, kind in _BLOCK_TABLE:
        if pattern.match(sub):
            *module, leaf = pattern.sub(repl, sub).split("/")
            return module, leaf, kind
    return None


def split_conformer_state(state: dict, head_dim: int):
    """The Conformer block tensors of a fairseq state dict, converted.

    -> (params {"layers_i": {...}} for the encoder, batch_stats {"layers_i": {...}}, the rest
    of the state dict). Rotary `inv_freq` buffers must be fairseq's 10000-base ones.
    """
    params, stats, rest = {}, {}, {}
    unknown = []
    expected_inv_freq = 1.0 / (10000.0 ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    for name, value in state.items():
        m = _LAYER.match(name)
        if not m:
            rest[name] = value
            continue
        layer, sub = m.group(1), m.group(2)
        if _DROPPED.search(sub):
            if sub.endswith("inv_freq") and not np.allclose(value, expected_inv_freq):
                raise ValueError(f"{name}: rotary frequencies other than fairseq's base 10000")
            continue
        found = _lookup(sub)
        if found is None:
            unknown.append(name)
            continue
        module, leaf, kind = found
        if kind == "stats":
            target, ours = stats, leaf
        else:
            target, ours = params, _LEAVES.get((kind, leaf), leaf)
        node = target.setdefault(f"layers_{layer}", {})
        for part in module:
            node = node.setdefault(part, {})
        node[ours] = _convert(value, kind, leaf)
    if unknown:
        raise ValueError(f"fairseq conformer checkpoint has tensors we cannot place: {unknown}")
    return params, stats, rest
