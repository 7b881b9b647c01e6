"""A Transformer language model over a speech recipe's vocabulary, for shallow fusion.

    python train.py --config configs/lm.py --workdir lm_workdir \
        --config.data.root=DATA --config.data.train_text=train.txt --config.data.valid_text=dev.txt

`data.root`/`data.config_yaml` is the speech recipe's data config: its sentencepiece model and
dictionary give the LM the speech model's exact vocabulary. Text files hold one sentence per
line (relative paths are under data.root). The trained model is written to `<workdir>/lm`.
Shapes: `transformer_lm` (fairseq's base, 512 x 6 layers) by default; `small` is the size that
suits a small recipe (and this machine); `smoke` is the few-step test run.
"""

import ml_collections

from configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, variant="base", smoke=False)
    c = ml_collections.ConfigDict()
    c.task = "lm"
    c.seed = 1
    c.data = ml_collections.ConfigDict(
        dict(
            root="",
            config_yaml="config.yaml",
            train_text="",
            valid_text="",
            buckets=(16, 32, 64, 128),  # sentence lengths in tokens (eos included)
        )
    )
    c.model = ml_collections.ConfigDict(
        dict(
            d_model=512,
            ffn_dim=2048,
            layers=6,
            attention_heads=8,
            dropout=0.1,
            attention_dropout=0.0,
            activation_dropout=0.0,
            activation_function="relu",
            normalize_before=True,
            final_layer_norm=True,
            share_input_output_embed=True,
            max_positions=512,
        )
    )
    if arg.variant == "small":
        c.model.update(d_model=128, ffn_dim=512, layers=2, attention_heads=4)
    elif arg.variant != "base":
        raise ValueError(f"unknown LM variant {arg.variant!r}: base or small")
    # fairseq's LM recipe: Adam, inverse_sqrt, weight decay 0.01, no clipping.
    c.max_tokens = 4096
    c.max_update = 50000
    c.lr = 5e-4
    c.lr_scheduler = "inverse_sqrt"
    c.warmup_updates = 4000
    c.warmup_init_lr = 1e-7
    c.adam_betas = (0.9, 0.98)
    c.adam_eps = 1e-8
    c.weight_decay = 0.01
    c.clip_norm = 0.0
    c.log_interval = 100
    c.save_interval_updates = 1000
    c.keep_last_checkpoints = 3
    if arg.smoke:
        c.model.update(d_model=32, ffn_dim=64, layers=1, attention_heads=2)
        c.max_tokens = 512
        c.max_update = 6
        c.warmup_updates = 2
        c.log_interval = 2
        c.save_interval_updates = 3
    return c
