"""The model shape the benchmarks run: fairseq's released s2t_transformer_s (LibriSpeech small).

Shared by bench/decode.py and bench/train_step.py, which add their own settings (tied or untied
embeddings, dropout) on top.
"""

S2T_SMALL = dict(
    vocab_size=10000,
    d_model=256,
    encoder_layers=12,
    decoder_layers=6,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=2048,
    decoder_ffn_dim=2048,
    conv_channels=1024,
    input_feat_per_channel=80,
    max_source_positions=6000,
    max_target_positions=1024,
)
