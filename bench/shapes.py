"""The model shape the benchmarks run: fairseq's released s2t_transformer_s (LibriSpeech small).

Taken from configs/common.py's table of released shapes, keeping the fields that both
transformers' and our Speech2TextConfig read. Shared by bench/decode.py and bench/train_step.py,
which set tied or untied embeddings on top (dropout is the recipe's 0.1).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `configs`

from configs.common import model_config, use_conformer  # noqa: E402

_FIELDS = (
    "vocab_size d_model encoder_layers decoder_layers encoder_attention_heads "
    "decoder_attention_heads encoder_ffn_dim decoder_ffn_dim conv_channels conv_kernel_sizes "
    "input_feat_per_channel max_source_positions max_target_positions dropout "
    "attention_dropout activation_dropout"
).split()


def s2t_small(tied: bool) -> dict:
    config = model_config("small", vocab_size=10000, tied=tied)
    return {**{k: config[k] for k in _FIELDS}, "tie_word_embeddings": tied}


def s2t_conformer(pos_enc_type: str) -> dict:
    """fairseq's s2t_conformer as the CoVoST 2 table's models have it (12 blocks, d_model 256,
    depthwise kernel 31), untied, with s2t-small's vocabulary of 10000."""
    config = model_config("small", vocab_size=10000, tied=False)
    use_conformer(config, pos_enc_type)
    extra = ("encoder_type", "pos_enc_type", "depthwise_conv_kernel_size")
    return {**{k: config[k] for k in _FIELDS + list(extra)}, "tie_word_embeddings": False}


def fairseq_conformer_flags(pos_enc_type: str) -> list[str]:
    """The fairseq-train model flags of the same model (decoder: s2t_conformer's defaults)."""
    return ["--arch", "s2t_conformer", "--attn-type", "espnet", "--pos-enc-type", pos_enc_type,
            "--encoder-layers", "12", "--dropout", "0.1"]  # fmt: skip
