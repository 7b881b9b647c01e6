"""Speech2TextConfig: the model's hyperparameters, read from and written to `config.json`.

It carries every field of transformers' `Speech2TextConfig`, so a hub checkpoint's config loads
unchanged and what we write back loads in transformers. Unknown keys are kept and written back,
because checkpoints carry keys (architectures, transformers_version, ...) that we do not use but
must not drop. `dtype` and `param_dtype` are ours: compute and parameter precision.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

_OURS_ONLY = (
    "dtype",
    "param_dtype",
    "zero_padded_frames",
    "encoder_type",
    "pos_enc_type",
    "depthwise_conv_kernel_size",
)
ENCODER_TYPES = ("transformer", "conformer")
POS_ENC_TYPES = ("abs", "rope", "rel_pos")
# Upper limits on sizes, far above any released model, so a corrupt or hostile config.json
# fails at once instead of allocating without bound.
_MAXIMA = {
    "vocab_size": 1 << 24,
    "encoder_layers": 1000,
    "decoder_layers": 1000,
    "encoder_ffn_dim": 1 << 20,
    "decoder_ffn_dim": 1 << 20,
    "encoder_attention_heads": 1024,
    "decoder_attention_heads": 1024,
    "d_model": 1 << 16,
    "num_conv_layers": 8,
    "conv_channels": 1 << 16,
    "conv_kernel_size": 1024,
    "depthwise_conv_kernel_size": 1024,
    "input_feat_per_channel": 4096,
    "input_channels": 64,
    "max_source_positions": 1 << 20,
    "max_target_positions": 1 << 20,
}


def _is_int(value) -> bool:
    return not isinstance(value, bool) and hasattr(value, "__index__")  # int, numpy ints


@dataclasses.dataclass
class Speech2TextConfig:
    vocab_size: int = 10000
    encoder_layers: int = 12
    encoder_ffn_dim: int = 2048
    encoder_attention_heads: int = 4
    decoder_layers: int = 6
    decoder_ffn_dim: int = 2048
    decoder_attention_heads: int = 4
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    use_cache: bool = True
    is_encoder_decoder: bool = True
    activation_function: str = "relu"
    d_model: int = 256
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    decoder_start_token_id: int = 2
    scale_embedding: bool = True
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    max_source_positions: int = 6000
    max_target_positions: int = 1024
    num_conv_layers: int = 2
    conv_kernel_sizes: tuple[int, ...] = (5, 5)
    conv_channels: int = 1024
    input_feat_per_channel: int = 80
    input_channels: int = 1
    tie_word_embeddings: bool = True
    # Ours: the encoder. "transformer" is transformers' Speech2Text (fairseq s2t_transformer);
    # "conformer" is fairseq's s2t_conformer, whose self-attention takes positions as
    # `pos_enc_type` says and whose convolution module has a depthwise kernel of
    # `depthwise_conv_kernel_size` frames. The two conformer fields are unused otherwise.
    encoder_type: str = "transformer"
    pos_enc_type: str = "abs"
    depthwise_conv_kernel_size: int = 31
    # Generation defaults, as the released checkpoints' config.json carries them.
    num_beams: int = 1
    max_length: int = 200
    early_stopping: bool = False
    # Ours: compute and parameter dtypes ("float32", "bfloat16", "float16").
    dtype: str = "float32"
    param_dtype: str = "float32"
    # Ours, off for parity: zero padded frames between conv layers (fairseq issue 3078), so an
    # utterance's output does not depend on how much padding its batch carries.
    zero_padded_frames: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self._check_types()
        self.conv_kernel_sizes = tuple(int(k) for k in self.conv_kernel_sizes)
        self.validate()

    def _check_types(self):
        """Types and sizes, before anything is allocated from them: a config.json with
        `"d_model": "32"`, a float or 1e9 layer count or `null` kernels is refused with the
        field's name, instead of a bare TypeError or a build that hangs while memory grows."""
        errors = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int":
                nullable = f.name.endswith("_token_id")
                if not (_is_int(value) or (nullable and value is None)):
                    errors.append(f"{f.name}={value!r} must be an integer")
                elif value is not None and f.name in _MAXIMA and value > _MAXIMA[f.name]:
                    errors.append(f"{f.name}={value} is above the limit of {_MAXIMA[f.name]}")
            elif f.type == "float" and not (_is_int(value) or isinstance(value, float)):
                errors.append(f"{f.name}={value!r} must be a number")
            elif f.type == "bool" and not isinstance(value, bool):
                if not (f.name == "early_stopping" and value == "never"):
                    errors.append(f"{f.name}={value!r} must be true or false")
            elif f.type == "str" and not isinstance(value, str):
                errors.append(f"{f.name}={value!r} must be a string")
        kernels = self.conv_kernel_sizes
        if not isinstance(kernels, (list, tuple)) or not all(
            _is_int(k) and 1 <= k <= _MAXIMA["conv_kernel_size"] for k in kernels
        ):
            errors.append(
                f"conv_kernel_sizes={kernels!r} must be a list of integers in "
                f"[1, {_MAXIMA['conv_kernel_size']}]"
            )
        if not isinstance(self.extra, dict):
            errors.append(f"extra={self.extra!r} must be an object")
        if errors:
            raise ValueError("Invalid Speech2TextConfig: " + "; ".join(errors))

    def validate(self):
        """Rejects values that cannot build a model, naming the field and what was expected."""
        errors = []
        if len(self.conv_kernel_sizes) != self.num_conv_layers:
            errors.append(
                f"len(conv_kernel_sizes)={len(self.conv_kernel_sizes)} must equal "
                f"num_conv_layers={self.num_conv_layers}"
            )
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if heads <= 0 or self.d_model % heads:
                errors.append(
                    f"d_model={self.d_model} must be divisible by {side}_attention_heads={heads}"
                )
        for name in (
            "vocab_size",
            "d_model",
            "encoder_ffn_dim",
            "decoder_ffn_dim",
            "conv_channels",
            "input_feat_per_channel",
            "input_channels",
            "max_source_positions",
            "max_target_positions",
        ):
            if getattr(self, name) <= 0:
                errors.append(f"{name}={getattr(self, name)} must be positive")
        if self.num_conv_layers > 1 and self.conv_channels % 2:
            errors.append(f"conv_channels={self.conv_channels} must be even (GLU halves it)")
        for name in ("encoder_layers", "decoder_layers", "num_conv_layers"):
            if getattr(self, name) < 0:
                errors.append(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                errors.append(f"{name}={getattr(self, name)} must be in [0, 1)")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                errors.append(f"{name}={value} must be in [0, vocab_size={self.vocab_size})")
        from s2t_jax.models.layers import ACTIVATIONS  # local: layers imports jax

        if self.activation_function not in ACTIVATIONS:
            errors.append(
                f"activation_function={self.activation_function!r} must be one of "
                f"{sorted(ACTIVATIONS)}"
            )
        if self.encoder_type not in ENCODER_TYPES:
            errors.append(f"encoder_type={self.encoder_type!r} must be one of {ENCODER_TYPES}")
        if self.pos_enc_type not in POS_ENC_TYPES:
            errors.append(f"pos_enc_type={self.pos_enc_type!r} must be one of {POS_ENC_TYPES}")
        if self.depthwise_conv_kernel_size < 1 or self.depthwise_conv_kernel_size % 2 == 0:
            errors.append(
                f"depthwise_conv_kernel_size={self.depthwise_conv_kernel_size} must be odd and "
                "positive (the convolution keeps the frame count)"
            )
        if (
            self.encoder_type == "conformer"
            and self.pos_enc_type == "rope"
            and self.encoder_attention_heads > 0
            and (self.d_model // self.encoder_attention_heads) % 2
        ):
            errors.append(
                f"pos_enc_type='rope' needs an even head size, got d_model={self.d_model} / "
                f"encoder_attention_heads={self.encoder_attention_heads}"
            )
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16", "float16"):
                errors.append(
                    f"{name}={getattr(self, name)!r} must be float32, bfloat16 or float16"
                )
        if errors:
            raise ValueError("Invalid Speech2TextConfig: " + "; ".join(errors))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.encoder_attention_heads

    def subsampled_length(self, frames: int) -> int:
        for _ in range(self.num_conv_layers):
            frames = (frames - 1) // 2 + 1
        return frames

    # --- dict / json -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Speech2TextConfig:
        if not isinstance(data, dict):
            raise ValueError(
                f"a Speech2Text config must be a JSON object, got {type(data).__name__}"
            )
        data = dict(data)
        for alias, name in cls.attribute_map.items():  # transformers: the alias wins
            if alias in data:
                data[name] = data.pop(alias)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: data.pop(k) for k in list(data) if k in names}
        if isinstance(known.get("eos_token_id"), list):
            known["eos_token_id"] = known["eos_token_id"][0]
        # transformers writes torch_dtype/dtype as e.g. "float32"; keep ours apart.
        for key in ("dtype",):
            if key in known and known[key] not in ("float32", "bfloat16", "float16"):
                data[key] = known.pop(key)
        extra = dict(data.pop("extra", {}) or {})
        extra.update(data)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out.setdefault("model_type", "speech_to_text")
        out.setdefault("architectures", ["Speech2TextForConditionalGeneration"])
        return out

    def to_transformers_dict(self) -> dict[str, Any]:
        """The config.json transformers reads: our own keys are left out."""
        out = self.to_dict()
        for key in _OURS_ONLY:
            out.pop(key, None)
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> Speech2TextConfig:
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, subfolder: str = "", **overrides
    ) -> Speech2TextConfig:
        """`subfolder`: a directory inside `path` that holds config.json, as in transformers."""
        path = os.path.join(path, subfolder) if subfolder else path
        overrides = {cls.attribute_map.get(k, k): v for k, v in overrides.items()}
        file = os.path.join(path, "config.json") if os.path.isdir(path) else path
        if not os.path.exists(file):
            raise FileNotFoundError(f"{file}: no config.json (expected a Speech2Text model dir)")
        config = cls.from_json_file(file)
        return config.replace(**overrides) if overrides else config

    def save_pretrained(self, path: str | os.PathLike, transformers_only: bool = False) -> None:
        os.makedirs(path, exist_ok=True)
        data = self.to_transformers_dict() if transformers_only else self.to_dict()
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")

    def replace(self, **changes) -> Speech2TextConfig:
        return dataclasses.replace(self, **changes)

    # --- transformers' PretrainedConfig API: aliases, unknown keys as attributes, JSON ------

    # transformers' names for three fields (read, set, and accepted in config.json).
    attribute_map = {
        "num_attention_heads": "encoder_attention_heads",
        "hidden_size": "d_model",
        "num_hidden_layers": "encoder_layers",
    }

    # transformers' base PretrainedConfig keys with their defaults (each a list of equal forms:
    # JSON turns id2label's integer keys into strings); to_diff_dict leaves these out.
    _base_defaults = {
        "_name_or_path": [""],
        "output_attentions": [False],
        "output_hidden_states": [False],
        "return_dict": [True],
        "chunk_size_feed_forward": [0],
        "problem_type": [None],
        "architectures": [None],
        "label2id": [{"LABEL_0": 0, "LABEL_1": 1}],
        "id2label": [{0: "LABEL_0", 1: "LABEL_1"}, {"0": "LABEL_0", "1": "LABEL_1"}],
    }

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @hidden_size.setter
    def hidden_size(self, value: int) -> None:
        self.d_model = value

    @property
    def num_attention_heads(self) -> int:
        return self.encoder_attention_heads

    @num_attention_heads.setter
    def num_attention_heads(self, value: int) -> None:
        self.encoder_attention_heads = value

    @property
    def num_hidden_layers(self) -> int:
        return self.encoder_layers

    @num_hidden_layers.setter
    def num_hidden_layers(self, value: int) -> None:
        self.encoder_layers = value

    def __getattr__(self, name: str):
        """Unknown config.json keys read as attributes (`config.architectures`), as in
        transformers. Only called when ordinary lookup fails."""
        extra = self.__dict__.get("extra")
        if extra is not None and not name.startswith("__") and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        """Fields and aliases set as usual; any other name is kept in `extra` and saved back,
        as transformers keeps an attribute set on its config (not validated: not ours)."""
        cls = type(self)
        if name in cls.__dataclass_fields__ or hasattr(cls, name) or name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.extra[name] = value

    def to_diff_dict(self) -> dict[str, Any]:
        """to_dict() less transformers' base-config keys that hold their defaults, as
        transformers' to_diff_dict (every Speech2Text field is kept)."""
        out = self.to_dict()
        for key, defaults in self._base_defaults.items():
            if key in out and out[key] in defaults:
                del out[key]
        return out

    def to_json_string(self, use_diff: bool = True) -> str:
        """use_diff=False adds transformers' base-config keys at their defaults, as its full
        dict has them (to_dict, which config.json is written from, leaves them out)."""
        if use_diff:
            data = self.to_diff_dict()
        else:
            data = {k: v[0] for k, v in self._base_defaults.items() if k != "architectures"}
            data.update(self.to_dict())
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        with open(json_file_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string(use_diff=use_diff))
