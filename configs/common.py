"""What every training config shares: the defaults (fairseq's names), model shapes, arg parsing.

A config file's `get_config(arg)` starts from `base_config()`, sets the model shape and the
recipe's published hyperparameters, and calls `shrink_for_local_run` when the argument holds
`runlocal`, so each config can be smoke-tested on a laptop:

    python train.py --config configs/librispeech.py:small,runlocal --workdir /tmp/ls \
        --config.data.root=/data/librispeech
"""

import ml_collections

from s2t_jax.training.sharding import DEFAULT_RULES

# fairseq's s2t_transformer_{s,m,l}: d_model, heads, ffn, dropout (attention and activation
# dropout follow dropout in fairseq's base architecture). 12 encoder / 6 decoder layers,
# conv subsampler 1024 channels, kernels 5,5.
SHAPES = {
    "small": dict(d_model=256, heads=4, ffn=2048, dropout=0.1),
    "medium": dict(d_model=512, heads=8, ffn=2048, dropout=0.15),
    "large": dict(d_model=1024, heads=16, ffn=4096, dropout=0.2),
}
ALIASES = {"s": "small", "m": "medium", "l": "large"}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """'small,runlocal' or 'lang=de,task=st' -> ConfigDict; bare words are variants or flags.

    A bare word sets the first default that is a string and still unset by the argument
    (`variant`), or a boolean default of that name to True.
    """
    out = dict(defaults)
    set_variant = False
    for part in [p.strip() for p in (arg or "").split(",") if p.strip()]:
        if "=" in part:
            key, value = part.split("=", 1)
            if key not in out:
                raise ValueError(f"unknown config argument {key!r}; known: {sorted(out)}")
            out[key] = type(out[key])(value) if out[key] is not None else value
        elif isinstance(out.get(part), bool):
            out[part] = True
        elif "variant" in out and not set_variant:
            out["variant"], set_variant = part, True
        else:
            raise ValueError(f"unknown config argument {part!r}")
    return ml_collections.ConfigDict(out)


def model_config(size: str, vocab_size: int, tied: bool, **overrides) -> ml_collections.ConfigDict:
    """Speech2TextConfig fields of a released s2t_transformer_{s,m,l} shape."""
    size = ALIASES.get(size, size)
    shape = SHAPES[size]
    fields = dict(
        vocab_size=vocab_size,
        d_model=shape["d_model"],
        encoder_layers=12,
        decoder_layers=6,
        encoder_attention_heads=shape["heads"],
        decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"],
        decoder_ffn_dim=shape["ffn"],
        dropout=shape["dropout"],
        attention_dropout=shape["dropout"],
        activation_dropout=shape["dropout"],
        activation_function="relu",
        num_conv_layers=2,
        conv_kernel_sizes=(5, 5),
        conv_channels=1024,
        input_feat_per_channel=80,
        input_channels=1,
        max_source_positions=6000,
        max_target_positions=1024,
        scale_embedding=True,
        tie_word_embeddings=tied,
        dtype="float32",
        param_dtype="float32",
        zero_padded_frames=False,
    )
    fields.update(overrides)
    return ml_collections.ConfigDict(fields)


# fairseq's s2t_conformer (--arch s2t_conformer --attn-type espnet --pos-enc-type P): the
# Conformer encoder with d_model 256, 4 heads, FFN 2048 and depthwise kernel 31, and the
# s2t_transformer base decoder (8 heads). The architecture's default is 16 encoder layers
# (52.4M parameters with a character vocabulary), but the CoVoST 2 table's 42.1M (abs, rope)
# and 42.9M (rel_pos) are what 12 layers give, so the released models have 12.
POS_ENC_TYPES = ("abs", "rope", "rel_pos")


def use_conformer(model: ml_collections.ConfigDict, pos_enc_type: str) -> None:
    """Turns a small (d_model 256) model config into s2t_conformer's encoder, in place."""
    if pos_enc_type not in POS_ENC_TYPES:
        raise ValueError(f"pos={pos_enc_type!r}: expected one of {POS_ENC_TYPES}")
    if model.d_model != 256:
        raise ValueError(
            f"the Conformer recipes are s2t_conformer's d_model 256, not {model.d_model}: use "
            "the small shape"
        )
    model.update(
        encoder_type="conformer",
        pos_enc_type=pos_enc_type,
        depthwise_conv_kernel_size=31,
        encoder_layers=12,
        encoder_attention_heads=4,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
    )


def choose_encoder(model: ml_collections.ConfigDict, arg) -> None:
    """A recipe's `encoder=transformer|conformer` (and `pos=`) argument, applied in place."""
    if arg.encoder == "conformer":
        use_conformer(model, arg.pos)
    elif arg.encoder != "transformer":
        raise ValueError(f"encoder={arg.encoder!r}: expected transformer or conformer")


def base_config() -> ml_collections.ConfigDict:
    """Defaults: fairseq's defaults and key names where fairseq has them."""
    c = ml_collections.ConfigDict()
    c.seed = 1
    c.model = model_config("small", vocab_size=-1, tied=False)
    c.data = ml_collections.ConfigDict(
        dict(
            root="",  # fairseq data root: manifests <subset>.tsv, config.yaml, vocabulary
            config_yaml="config.yaml",
            train_subset="train",
            valid_subset="dev",  # "" disables validation
            # Padded frame lengths; one compile per bucket. Longer utterances are skipped.
            buckets=(256, 384, 512, 640, 768, 1024, 1280, 1536, 2048, 2560, 3072, 3600),
            max_sentences=0,  # cap on utterances per batch (fairseq --batch-size); 0: none
            num_workers=4,  # Grain worker processes decoding audio / reading features
            skip_bad_audio=True,  # False: an unreadable file or bad manifest row stops training
        )
    )
    c.num_devices = -1  # devices in the mesh; -1: all (multi-process runs use all)
    # Device mesh ('data', 'fsdp', 'tensor'); one size may be -1 (the rest). See docs/scaling.md.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    # Logical axis name -> mesh axes (s2t_jax/training/sharding.py names every array of the state).
    c.sharding = ml_collections.ConfigDict(dict(rules=DEFAULT_RULES))
    c.max_tokens = 40000  # padded input frames per batch, over all devices
    c.update_freq = 8  # gradient accumulation (fairseq simulates 8 GPUs with 1)
    c.max_update = 300000
    c.max_epoch = 0  # 0: no limit
    # Optimiser: Adam + inverse_sqrt.
    c.lr = 2e-3
    c.lr_scheduler = "inverse_sqrt"
    c.warmup_updates = 10000
    c.warmup_init_lr = -1.0  # fairseq: -1 means 0 with warmup
    c.adam_betas = (0.9, 0.999)  # fairseq's default; the S2T recipes do not change it
    c.adam_eps = 1e-8
    c.weight_decay = 0.0
    c.clip_norm = 10.0
    # Criterion.
    c.label_smoothing = 0.1
    c.ignore_prefix_size = 0
    c.ctc_weight = 0.0  # > 0 adds a CTC head on the encoder (outside the model's params)
    # Init / freezing.
    c.load_pretrained_encoder_from = ""
    c.encoder_freezing_updates = 0
    c.specaugment = ""  # "": as the data config says; "none"; or a policy: lb, ld, sm, ss
    # Checkpoints, validation, logging.
    c.save_interval_updates = 1000
    c.keep_last_checkpoints = 10  # average_checkpoints averages the last 10
    c.keep_best_checkpoints = 1
    c.best_checkpoint_metric = "loss"
    c.maximize_best_checkpoint_metric = False
    c.validate_interval_updates = 0  # 0: validate at every save, as fairseq
    c.async_checkpointing = True
    # A non-finite loss or gradient norm: "skip" the update (counted as skipped_updates) or
    # "stop" the run naming the step and utterances. The bad update is never applied.
    c.nan_policy = "skip"
    # Greedy decoding of (part of) the dev split at each validation. metric: "wer" (ASR) or
    # "bleu" (ST: sacrebleu 13a on detokenised text, as fairseq's --eval-bleu).
    c.wer = ml_collections.ConfigDict(
        dict(
            enabled=True,
            max_length=200,
            max_batches=20,
            metric="wer",
            # Scorers of the validation search, as eval.py's --ctc_weight / --lm / --lm_weight
            # (decoding/fusion.py): joint CTC/attention decoding needs ctc_weight > 0 above.
            ctc_weight=0.0,
            lm="",
            lm_weight=0.0,
        )
    )
    c.log_interval = 100
    c.peak_flops = 0.0  # per-device peak for MFU; 0: from the table (measured on CPU)
    c.measure_cpu_peak = True
    c.cpu_unrolled_threefry = True  # faster dropout RNG on CPU (same numbers); see train_state
    return c


def shrink_for_local_run(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A run that finishes in a minute on a CPU: 2+1 thin layers, small batches, 20 updates."""
    c.model.update(
        d_model=64,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        conv_channels=64,
    )
    c.data.buckets = (512, 1024, 1536)
    c.data.num_workers = 1
    c.max_tokens = 4096
    c.update_freq = 1
    c.max_update = 20
    c.warmup_updates = 5
    c.save_interval_updates = 10
    c.log_interval = 5
    c.wer.max_batches = 1
    return c
