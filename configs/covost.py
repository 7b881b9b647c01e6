"""CoVoST 2: En ASR and X->En / En->X ST, s2t_transformer_s with character vocabularies.

    python train.py --config configs/covost.py:st,pair=fr_en --workdir ws/covost_fr_en \
        --config.data.root=/data/covost/fr \
        --config.load_pretrained_encoder_from=ws/covost_en_asr/avg_last_10

Recipe (fairseq's docs/covost_example.md):
  asr       En ASR: max_tokens 50000, 60k updates, dropout 0.15, lr 2e-3, config_asr_en.yaml
  st,pair=  fr_en de_en es_en ca_en (max_tokens 40000) or en_de en_ca en_fa en_et (50000):
            30k updates, lr 2e-3, encoder from the En ASR model, encoder_freezing_updates 1000
Conformer (s2t_conformer, fairseq's table: En ASR 23.18 WER with rel_pos, 23.8 rope / abs;
Fr-En ST 28.32 BLEU with rel_pos from scratch): add `encoder=conformer,pos={abs,rope,rel_pos}`,
e.g. `configs/covost.py:asr,encoder=conformer,pos=rel_pos`; same recipe otherwise.
All: char vocabulary (size from the data's dictionary), warmup 10k, update_freq 8, clip 10,
label smoothing 0.1, untied embeddings, SpecAugment "lb" from the config yaml.
"""

from configs import common

PAIRS = ("fr_en", "de_en", "es_en", "ca_en", "en_de", "en_ca", "en_fa", "en_et")


def get_config(arg=None):
    arg = common.parse_arg(
        arg, variant="st", pair="fr_en", encoder="transformer", pos="abs", runlocal=False
    )
    c = common.base_config()
    c.update_freq = 8
    c.warmup_updates = 10000
    c.clip_norm = 10.0
    c.label_smoothing = 0.1
    c.lr = 2e-3
    if arg.variant == "asr":
        c.model = common.model_config(
            "small",
            vocab_size=-1,
            tied=False,
            dropout=0.15,
            attention_dropout=0.15,
            activation_dropout=0.15,
        )
        c.data.root = "data/covost/en"
        c.data.config_yaml = "config_asr_en.yaml"
        c.data.train_subset, c.data.valid_subset = "train_asr_en", "dev_asr_en"
        c.max_tokens = 50000
        c.max_update = 60000
    elif arg.variant == "st":
        if arg.pair not in PAIRS:
            raise ValueError(f"pair={arg.pair!r}: expected one of {PAIRS}")
        src = arg.pair.split("_")[0]
        c.model = common.model_config("small", vocab_size=-1, tied=False)
        c.data.root = f"data/covost/{src}"
        c.data.config_yaml = f"config_st_{arg.pair}.yaml"
        c.data.train_subset = f"train_st_{arg.pair}"
        c.data.valid_subset = f"dev_st_{arg.pair}"
        c.max_tokens = 50000 if src == "en" else 40000
        c.max_update = 30000
        c.encoder_freezing_updates = 1000
        c.wer.metric = "bleu"
    else:
        raise ValueError(f"covost variant {arg.variant!r}: expected asr or st")
    common.choose_encoder(c.model, arg)
    if arg.runlocal:
        common.shrink_for_local_run(c)
    return c
