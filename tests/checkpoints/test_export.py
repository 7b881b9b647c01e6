"""The processor files an export writes for a multilingual vocabulary."""

import pytest
import sentencepiece as spm

from s2t_jax.checkpoints.export import language_tag_kwargs, write_processor_files
from s2t_jax.data.data_config import DataConfig
from s2t_jax.frontend.tokenizer import MUSTC_LANGS, Speech2TextTokenizer

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def _data_dir(root, langs):
    tags = [f"<lang:{lang}>" for lang in langs]
    with open(root / "text.txt", "w") as f:
        for i in range(200):
            f.write(" ".join(WORDS[(i + j) % len(WORDS)] for j in range(5)) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(root / "text.txt"), model_prefix=str(root / "spm"), vocab_size=30 + len(tags), hard_vocab_limit=False,
        model_type="unigram", user_defined_symbols=",".join(tags), bos_id=0, eos_id=2,
        pad_id=1, unk_id=3, minloglevel=2,
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_file=str(root / "spm.model"))
    with open(root / "dict.txt", "w") as f:
        for i in range(4, sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)} 1\n")
    (root / "config.yaml").write_text(
        "vocab_filename: dict.txt\nbpe_tokenizer: {bpe: sentencepiece, sentencepiece_model: "
        f"{root / 'spm.model'}}}\ninput_feat_per_channel: 80\nprepend_tgt_lang_tag: true\n"
    )
    return DataConfig.load(str(root))


@pytest.mark.parametrize("langs", [("de", "fr"), tuple(MUSTC_LANGS)])
def test_language_tags_are_special_in_the_exported_tokenizer(langs, tmp_path):
    data = _data_dir(tmp_path, langs)
    write_processor_files(data, str(tmp_path / "out"))
    tok = Speech2TextTokenizer.from_pretrained(str(tmp_path / "out"))
    tag = f"<lang:{langs[1]}>"
    ids = [tok.convert_tokens_to_ids(tag)] + tok("delta golf")["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "delta golf"
    assert tok.decode(ids).startswith(tag)
    if len(langs) == len(MUSTC_LANGS):  # transformers' multilingual MuST-C tokenizer
        assert tok.lang_codes == "mustc" and set(tok.lang_code_to_id) == set(langs)
        tok.tgt_lang = langs[1]
        assert tok("delta")["input_ids"][0] == tok.lang_code_to_id[langs[1]]


def test_a_vocabulary_without_tags_gets_no_extra_tokens():
    assert language_tag_kwargs({"<s>": 0, "alpha": 4}) == {}
