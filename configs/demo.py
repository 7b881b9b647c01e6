"""The demo: a small ASR model sized for a 2-core CPU, trained on the synthetic eSpeak corpus.

    python train.py --config configs/demo.py --workdir demo_workdir/train \
        --config.data.root=demo_workdir/corpus

`configs/demo.py:smoke` is the few-step version the test suite runs. `configs/demo.py:conformer`
is the Conformer the README compares with it: fairseq's s2t_conformer block (rel_pos) at the
demo's width, 4 blocks (3.4M parameters against 2.8M), trained for the same wall-clock time.
"""

from configs import common


def get_config(arg=None):
    arg = common.parse_arg(arg, smoke=False, conformer=False)
    c = common.base_config()
    c.model = common.model_config(
        "small",
        vocab_size=-1,  # from the corpus's dictionary
        tied=True,
        d_model=144,
        encoder_layers=6,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=576,
        decoder_ffn_dim=576,
        conv_channels=256,
        # No dropout and no SpecAugment: with 12,000 utterances and ~4 epochs, dev loss tracks
        # train loss (nothing to regularise), and both slow early learning. On 3,000 it overfit.
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        max_source_positions=1024,
        max_target_positions=128,
    )
    # The corpus's utterances are 1.2-4.7 s (120-470 frames): two buckets, two compiles.
    c.data.buckets = (320, 480)
    c.data.num_workers = 1
    # Small batches (~22 utterances), many updates: a step costs what its frames cost here, and
    # early on more updates beat bigger ones. 2,400 updates: ~15 minutes of a quiet 2-core CPU.
    c.max_tokens = 8000
    c.update_freq = 1
    c.max_update = 2400
    c.lr = 3e-3
    c.warmup_updates = 150
    # CTC on the encoder teaches alignment fast on small data (fairseq's --ctc-weight).
    c.ctc_weight = 0.5
    c.specaugment = "none"
    c.save_interval_updates = 600
    c.validate_interval_updates = 300
    c.keep_last_checkpoints = 2
    c.log_interval = 50
    c.wer.max_length = 60
    c.wer.max_batches = 4
    c.measure_cpu_peak = False
    if arg.conformer:
        # Depthwise kernel 15 (not 31): the demo's utterances are 30-120 frames after
        # subsampling. A step costs ~1.4x the Transformer's here (bench: relative-position
        # attention, the convolution module, two FFNs per block), so 1,700 updates take the
        # Transformer's 2,400 updates' time.
        c.model.update(
            encoder_type="conformer",
            pos_enc_type="rel_pos",
            depthwise_conv_kernel_size=15,
            encoder_layers=4,
        )
        c.max_update = 1700
        c.save_interval_updates = 340
        c.validate_interval_updates = 170
    if arg.smoke:
        c.model.update(
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            conv_channels=32,
        )
        c.max_tokens = 2000
        c.max_update = 6
        c.warmup_updates = 2
        c.save_interval_updates = 6
        c.validate_interval_updates = 6
        c.log_interval = 2
        c.wer.max_length = 20
        c.wer.max_batches = 1
        c.async_checkpointing = False
    return c
