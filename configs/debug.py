"""A tiny model for tests and smoke runs: ~50k parameters, a few hundred CPU steps.

python train.py --config configs/debug.py --workdir /tmp/dbg --config.data.root=DATA
"""

from configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, runlocal=False)
    c = common.base_config()
    c.model = common.model_config(
        "small",
        vocab_size=-1,
        tied=True,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        conv_channels=32,
        conv_kernel_sizes=(3, 3),
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        input_feat_per_channel=16,
        max_source_positions=512,
        max_target_positions=64,
    )
    c.data.buckets = (24, 32)
    c.data.num_workers = 0
    c.data.valid_subset = "dev"
    c.max_tokens = 512
    c.update_freq = 1
    c.max_update = 200
    c.lr = 5e-3
    c.warmup_updates = 20
    c.save_interval_updates = 100
    c.keep_last_checkpoints = 3
    c.log_interval = 10
    c.async_checkpointing = True
    c.wer.max_length = 16
    c.wer.max_batches = 2
    c.measure_cpu_peak = False
    if arg.runlocal:
        c.max_update = 20
    return c
