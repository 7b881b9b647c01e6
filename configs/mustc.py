"""MuST-C En->X: ASR and ST per language (small), joint ASR and multilingual ST (medium).

    python train.py --config configs/mustc.py:st,lang=de --workdir ws/mustc_de_st \
        --config.data.root=/data/mustc/en-de \
        --config.load_pretrained_encoder_from=ws/mustc_de_asr/avg_last_10

Variants (fairseq's examples/speech_to_text/config/mustc-*.yaml and docs/mustc_example.md):
  asr,lang=xx   s2t_transformer_s, unigram 5000, lr 1e-3, config_asr.yaml
  st,lang=xx    s2t_transformer_s, unigram 8000, lr 2e-3, config_st.yaml, encoder from ASR
  joint_asr     s2t_transformer_m, unigram 10000 over the 8 directions' ASR data, lr 1e-3
  multi_st      s2t_transformer_m, unigram 10000 with <lang:xx> tags first, lr 2e-3,
                ignore_prefix_size 1, encoder from the joint ASR model
All: max_tokens 40000, update_freq 8, 100k updates, warmup 10k, clip 10, label smoothing 0.1,
untied embeddings, SpecAugment "lb" (from config yaml). Released: s2t-small-mustc-en-*-st
31.1M, s2t-medium-mustc-multilingual-st 76.3M.
"""

from configs import common

LANGS = ("de", "es", "fr", "it", "nl", "pt", "ro", "ru")


def get_config(arg=None):
    arg = common.parse_arg(arg, variant="st", lang="de", runlocal=False)
    if arg.lang not in LANGS:
        raise ValueError(f"lang={arg.lang!r}: MuST-C has {LANGS}")
    c = common.base_config()
    c.data.root = f"data/mustc/en-{arg.lang}"
    c.max_tokens = 40000
    c.update_freq = 8
    c.max_update = 100000
    c.warmup_updates = 10000
    c.clip_norm = 10.0
    c.label_smoothing = 0.1
    if arg.variant == "asr":
        c.model = common.model_config("small", vocab_size=5000, tied=False)
        c.data.config_yaml = "config_asr.yaml"
        c.data.train_subset, c.data.valid_subset = "train_asr", "dev_asr"
        c.lr = 1e-3
    elif arg.variant == "st":
        c.model = common.model_config("small", vocab_size=8000, tied=False)
        c.data.config_yaml = "config_st.yaml"
        c.data.train_subset, c.data.valid_subset = "train_st", "dev_st"
        c.lr = 2e-3
        c.wer.metric = "bleu"
    elif arg.variant in ("joint_asr", "multi_st"):
        task = "asr" if arg.variant == "joint_asr" else "st"
        c.model = common.model_config("medium", vocab_size=10000, tied=False)
        c.data.root = "data/mustc"
        c.data.config_yaml = f"config_{task}.yaml"
        c.data.train_subset = ",".join(f"train_{lang}_{task}" for lang in LANGS)
        c.data.valid_subset = ",".join(f"dev_{lang}_{task}" for lang in LANGS)
        c.lr = 1e-3 if task == "asr" else 2e-3
        if task == "st":
            c.ignore_prefix_size = 1  # the <lang:xx> tag is given, not predicted
            c.wer.metric = "bleu"  # with each utterance's <lang:xx> forced first
    else:
        raise ValueError(f"mustc variant {arg.variant!r}: expected asr, st, joint_asr, multi_st")
    if arg.runlocal:
        common.shrink_for_local_run(c)
    return c
