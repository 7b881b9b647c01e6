"""Turns a training workdir into a self-contained model directory.

A workdir holds Orbax train states and the fairseq data config it trained from; users and
`transcribe` want what a hub repo holds: weights, config.json, and the processor files
(tokenizer: vocab.json + sentencepiece.bpe.model + tokenizer_config.json; feature extractor:
preprocessor_config.json with the data config's CMVN), plus generation_config.json. The
tokenizer's ids are the fairseq dictionary's (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, then the
dictionary file's order), which is what the model was trained on.
"""

from __future__ import annotations

import json
import os

from s2t_jax.checkpoints.model_dir import save_model_dir
from s2t_jax.checkpoints.workdir import load_recorded_data_config, load_train_checkpoint
from s2t_jax.data.vocab import FairseqDictionary


def language_tag_kwargs(vocab: dict) -> dict:
    """Tokenizer arguments for a multilingual vocabulary's `<lang:xx>` tags: they become special
    tokens (decode(skip_special_tokens=True) drops them, as it drops `</s>`), and a vocabulary
    with MuST-C's eight tags gets transformers' `lang_codes="mustc"` (so `tgt_lang` and
    `lang_code_to_id` work as with the released multilingual checkpoint)."""
    from s2t_jax.frontend.tokenizer import LANGUAGES

    tags = [t for t in vocab if t.startswith("<lang:") and t.endswith(">")]
    if not tags:
        return {}
    langs = {t[len("<lang:") : -1] for t in tags}
    if langs == set(LANGUAGES["mustc"]):
        return {"lang_codes": "mustc"}
    return {"additional_special_tokens": tags}


def write_processor_files(data, out_dir: str, split: str = "test") -> None:
    """Tokenizer and feature-extractor files for a fairseq data config."""
    import shutil

    from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor
    from s2t_jax.frontend.tokenizer import Speech2TextTokenizer

    os.makedirs(out_dir, exist_ok=True)
    if not data.spm_path:
        raise ValueError("the data config has no sentencepiece model; cannot build a tokenizer")
    vocab_json = os.path.join(out_dir, "vocab.json")
    with open(vocab_json, "w", encoding="utf-8") as f:
        vocab = FairseqDictionary.load(data.vocab_path).index  # specials first, then the file
        json.dump(vocab, f, ensure_ascii=False, indent=0)
    spm_file = os.path.join(out_dir, "sentencepiece.bpe.model")
    shutil.copy2(data.spm_path, spm_file)
    Speech2TextTokenizer(vocab_json, spm_file, **language_tag_kwargs(vocab)).save_pretrained(
        out_dir
    )

    feat = data.input_feat_per_channel
    kwargs = dict(feature_size=feat, num_mel_bins=feat, sampling_rate=data.sampling_rate)
    cmvn = data.cmvn(split, is_train=False)
    if any(step["kind"] == "global" for step in cmvn):
        stats = next(s for s in cmvn if s["kind"] == "global")["stats_npz_path"]
        extractor = Speech2TextFeatureExtractor(global_cmvn_path=stats, **kwargs)
    else:
        extractor = Speech2TextFeatureExtractor(do_ceptral_normalize=bool(cmvn), **kwargs)
    extractor.save_pretrained(out_dir)


def export_workdir(
    workdir: str,
    out_dir: str,
    step: int | None = None,
    transformers_format: bool = False,
    num_beams: int = 5,
    max_length: int = 200,
) -> str:
    """Writes the model of `workdir` (latest step by default) to a model directory."""
    trained = load_train_checkpoint(workdir, step)
    config = trained.config.replace(num_beams=num_beams, max_length=max_length, early_stopping=True)
    step = trained.step
    save_model_dir(
        out_dir,
        config,
        trained.params,
        transformers_format,
        ctc_head=trained.ctc_head,
        batch_stats=trained.batch_stats,
    )
    write_processor_files(load_recorded_data_config(workdir), out_dir)
    generation = {
        "num_beams": num_beams,
        "max_length": max_length,
        "early_stopping": True,
        "decoder_start_token_id": config.decoder_start_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }
    with open(os.path.join(out_dir, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
    with open(os.path.join(out_dir, "export.json"), "w") as f:
        json.dump({"workdir": os.path.abspath(workdir), "step": int(step)}, f, indent=2)
    return out_dir
