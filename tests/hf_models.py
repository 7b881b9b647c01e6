"""Random-weight transformers Speech2Text checkpoints for parity tests.

Built with transformers' own classes and `save_pretrained`, so each test compares against the
real reference. `decisive=True` scales the output embedding so that logits are far apart and
argmax/beam decisions are not ties (random weights otherwise give near-flat distributions).
"""

import numpy as np
import torch
import transformers

TINY = dict(
    vocab_size=64,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    conv_channels=48,
    input_feat_per_channel=80,
    max_source_positions=1500,
    max_target_positions=64,
)

# Shapes that cover the config space: 3 conv layers with other kernels, gelu, untied
# embeddings, no embedding scale, a non-80 feature size.
SHAPES = {
    "tiny": dict(TINY),
    "conv3_gelu_untied": dict(
        TINY,
        num_conv_layers=3,
        conv_kernel_sizes=[3, 5, 7],
        activation_function="gelu",
        tie_word_embeddings=False,
        scale_embedding=False,
        input_feat_per_channel=40,
        d_model=48,
        encoder_attention_heads=6,
        decoder_attention_heads=3,
    ),
    "wide_untied": dict(
        TINY,
        d_model=64,
        encoder_layers=3,
        decoder_layers=1,
        encoder_ffn_dim=96,
        decoder_ffn_dim=48,
        conv_channels=64,
        tie_word_embeddings=False,
    ),
}


def make_hf_model(seed=0, decisive=False, **overrides):
    """A transformers Speech2TextForConditionalGeneration with random weights, in eval mode."""
    torch.manual_seed(seed)
    config = transformers.Speech2TextConfig(**{**TINY, **overrides})
    model = transformers.Speech2TextForConditionalGeneration(config).eval()
    if decisive:
        with torch.no_grad():
            head = model.get_output_embeddings().weight
            head.mul_(8.0)
            if not config.tie_word_embeddings:
                model.model.decoder.embed_tokens.weight.mul_(2.0)
    return model


def save_hf_model(path, seed=0, decisive=False, **overrides):
    model = make_hf_model(seed=seed, decisive=decisive, **overrides)
    model.save_pretrained(path)
    return model


def random_features(batch, frames, feat, seed=0, lengths=None):
    """Padded [batch, frames, feat] float32 features and an int32 frame mask."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, frames, feat)).astype(np.float32)
    mask = np.ones((batch, frames), np.int32)
    for i, n in enumerate(lengths or []):
        x[i, n:] = 0.0
        mask[i, n:] = 0
    return x, mask
