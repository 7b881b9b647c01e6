"""LibriSpeech ASR, fairseq's recipe (examples/speech_to_text/docs/librispeech_example.md).

    python train.py --config configs/librispeech.py:small --workdir ws/ls_s \
        --config.data.root=/data/librispeech

Data as fairseq's prep_librispeech_data.py (or our s2t_jax.data.prep.librispeech) writes it:
unigram 10000 vocabulary, SpecAugment policy "ld" in config.yaml, train = all 960 h.
Recipe: s2t_transformer_{s,m,l}, tied embeddings, lr 2e-3 / 1e-3 / 5e-4, inverse_sqrt with
10k warmup, max_tokens 40000, update_freq 8, 300k updates, clip 10, label smoothing 0.1.
Evaluation: average the last 10 checkpoints, beam 5.
Released shapes: 29.5M / 71.2M / 267.8M parameters.
Conformer: `small,encoder=conformer,pos={abs,rope,rel_pos}` is s2t_conformer (12 Conformer
blocks, d_model 256, depthwise kernel 31) with this recipe; fairseq's own test checkpoint is a
LibriSpeech rel_pos model of that size (librispeech_conformer_rel_pos_s.pt).
"""

from configs import common

LR = {"small": 2e-3, "medium": 1e-3, "large": 5e-4}


def get_config(arg=None):
    arg = common.parse_arg(arg, variant="small", encoder="transformer", pos="abs", runlocal=False)
    size = common.ALIASES.get(arg.variant, arg.variant)
    if size not in LR:
        raise ValueError(f"librispeech variant {arg.variant!r}: expected small, medium or large")
    c = common.base_config()
    c.model = common.model_config(size, vocab_size=10000, tied=True)
    common.choose_encoder(c.model, arg)
    c.data.root = "data/librispeech"
    c.data.train_subset = "train-clean-100,train-clean-360,train-other-500"
    c.data.valid_subset = "dev-clean,dev-other"
    c.max_tokens = 40000
    c.update_freq = 8
    c.max_update = 300000
    c.lr = LR[size]
    c.warmup_updates = 10000
    c.clip_norm = 10.0
    c.label_smoothing = 0.1
    if arg.runlocal:
        common.shrink_for_local_run(c)
    return c
