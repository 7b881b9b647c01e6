"""Speech2TextTokenizer: exact parity with transformers' on sentencepiece models trained here
(unigram, bpe, char as in CoVoST, and unigram with <lang:xx> symbols for MuST-C)."""

import json

import numpy as np
import pytest

from s2t_jax.frontend.tokenizer import Speech2TextTokenizer

TEXTS = [
    "kato remi suan",
    "The quick brown fox, and the lazy dog.",
    "  leading and   inner   spaces  ",
    "",
    "UPPER Case Words qui ka",
    "unknown chars: ü ñ 你好 № ∑",
    "special tokens inline </s> and <s> and <unk> and <pad>!",
    "no space</s>between<pad>tokens",
    "<lang:de> tag as text <lang:fr>",
    "ää é ço sch ght ion",
]

CASES = {
    "unigram": dict(),
    "bpe": dict(),
    "char": dict(),
    "unigram_upper": dict(do_upper_case=True),
    "unigram_lower": dict(do_lower_case=True),
    "mustc_de": dict(lang_codes="mustc", tgt_lang="de"),
    "mustc_default": dict(lang_codes="mustc"),
    "mustc_upper_fr": dict(lang_codes="mustc", tgt_lang="fr", do_upper_case=True),
}


def model_dir(spm_dirs, case):
    return spm_dirs[case.split("_")[0]]


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, spm_dirs, quiet_transformers):
    """(ours, transformers') tokenizers built from the same files and options."""
    directory = model_dir(spm_dirs, request.param)
    files = (directory / "vocab.json", directory / "sentencepiece.bpe.model")
    kwargs = CASES[request.param]
    return (
        Speech2TextTokenizer(*files, **kwargs),
        quiet_transformers.Speech2TextTokenizer(*map(str, files), **kwargs),
    )


def test_special_ids(pair):
    ours, ref = pair
    assert (ours.bos_token_id, ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == (
        0,
        1,
        2,
        3,
    )
    for attr in ("bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id", "vocab_size"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert len(ours) == len(ref)
    assert ours.all_special_tokens == ref.all_special_tokens
    assert ours.all_special_ids == ref.all_special_ids
    assert ours.prefix_tokens == ref.prefix_tokens
    assert ours.lang_code_to_id == ref.lang_code_to_id
    assert ours.get_vocab() == ref.get_vocab()


def test_encode_parity(pair):
    ours, ref = pair
    for text in TEXTS:
        assert ours.tokenize(text) == ref.tokenize(text), text
        assert ours(text)["input_ids"] == ref(text)["input_ids"], text
        assert ours(text)["attention_mask"] == ref(text)["attention_mask"], text
        assert ours.encode(text) == ref.encode(text), text
        assert ours.encode(text, add_special_tokens=False) == ref.encode(
            text, add_special_tokens=False
        )
        ids = ours.encode(text)
        assert ids[-1] == 2 and ids[: len(ours.prefix_tokens)] == ours.prefix_tokens


def test_batch_parity(pair):
    ours, ref = pair
    got = ours(TEXTS, padding=True, return_tensors="np")
    want = ref(TEXTS, padding=True, return_tensors="np")
    for key in ("input_ids", "attention_mask"):
        assert got[key].dtype == want[key].dtype
        np.testing.assert_array_equal(got[key], want[key])
    assert ours(TEXTS)["input_ids"] == ref(TEXTS)["input_ids"]
    single = ours(TEXTS[0], return_tensors="np")["input_ids"]
    assert single.shape == ref(TEXTS[0], return_tensors="np")["input_ids"].shape
    for kwargs in (
        dict(max_length=6),
        dict(max_length=6, truncation=True, padding="max_length"),
        dict(padding="longest", pad_to_multiple_of=8),
        dict(padding=True, padding_side="left"),
    ):
        assert ours(TEXTS, **kwargs)["input_ids"] == ref(TEXTS, **kwargs)["input_ids"], kwargs
        assert ours(TEXTS, **kwargs)["attention_mask"] == ref(TEXTS, **kwargs)["attention_mask"]


def test_decode_parity(pair):
    ours, ref = pair
    batch = ours(TEXTS, padding=True, return_tensors="np")["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(batch, skip_special_tokens=skip) == ref.batch_decode(
            batch, skip_special_tokens=skip
        )
    rng = np.random.default_rng(0)
    random_ids = [rng.integers(0, len(ours) + 5, size=12).tolist() for _ in range(20)]
    random_ids.append([0, 4, 7, 2, 3, 1, len(ours) + 10])
    for ids in random_ids:
        assert ours.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == ref.decode(
                ids, skip_special_tokens=skip
            ), ids
    assert ours.decode(np.array(batch[0])) == ref.decode(batch[0].tolist())
    assert ours.convert_ids_to_tokens(5) == ref.convert_ids_to_tokens(5)


def test_upper_case_decodes_upper(spm_dirs):
    d = spm_dirs["unigram"]
    tok = Speech2TextTokenizer(d / "vocab.json", d / "sentencepiece.bpe.model", do_upper_case=True)
    text = tok.decode(tok.encode("kato remi"), skip_special_tokens=True)
    assert text == text.upper() and text.replace(" ", "") == "KATOREMI"


def test_lower_case_matches_transformers_5(spm_dirs, quiet_transformers):
    """transformers 5 stores do_lower_case but no longer lower-cases input; neither do we."""
    d = spm_dirs["unigram"]
    files = (d / "vocab.json", d / "sentencepiece.bpe.model")
    ours = Speech2TextTokenizer(*files, do_lower_case=True)
    ref = quiet_transformers.Speech2TextTokenizer(*map(str, files), do_lower_case=True)
    assert ours.encode("KATO Remi") == ref.encode("KATO Remi")
    assert ours.do_lower_case is True


def test_char_vocabulary(spm_dirs):
    d = spm_dirs["char"]
    tok = Speech2TextTokenizer(d / "vocab.json", d / "sentencepiece.bpe.model")
    pieces = tok.tokenize("kato remi")
    assert all(len(p.replace("▁", "")) <= 1 for p in pieces)
    assert tok.decode(tok.encode("kato remi"), skip_special_tokens=True) == "kato remi"


def test_mustc_target_language(spm_dirs, quiet_transformers):
    d = spm_dirs["mustc"]
    files = (d / "vocab.json", d / "sentencepiece.bpe.model")
    vocab = json.loads((d / "vocab.json").read_text())
    ours = Speech2TextTokenizer(*files, lang_codes="mustc", tgt_lang="de")
    ref = quiet_transformers.Speech2TextTokenizer(
        *map(str, files), lang_codes="mustc", tgt_lang="de"
    )
    assert ours.lang_code_to_id["de"] == vocab["<lang:de>"]
    assert ours.encode("kato")[0] == vocab["<lang:de>"]
    ours.tgt_lang = ref.tgt_lang = "es"
    assert ours.prefix_tokens == ref.prefix_tokens == [vocab["<lang:es>"]]
    assert ours("kato remi")["input_ids"] == ref("kato remi")["input_ids"]
    assert ours.decode(ours.encode("kato")) == ref.decode(ref.encode("kato"))
    assert ours.decode(ours.encode("kato"), skip_special_tokens=True) == "kato"
    with pytest.raises(ValueError, match="xx"):
        ours.tgt_lang = "xx"


def test_save_load_round_trips(spm_dirs, tmp_path, quiet_transformers):
    d = spm_dirs["mustc"]
    ours = Speech2TextTokenizer(
        d / "vocab.json", d / "sentencepiece.bpe.model", lang_codes="mustc", tgt_lang="it"
    )
    ours.save_pretrained(tmp_path / "ours")
    ref_loaded = quiet_transformers.Speech2TextTokenizer.from_pretrained(str(tmp_path / "ours"))
    ours_loaded = Speech2TextTokenizer.from_pretrained(tmp_path / "ours")
    ref_loaded.save_pretrained(str(tmp_path / "ref"))
    ours_from_ref = Speech2TextTokenizer.from_pretrained(tmp_path / "ref")
    for tok in (ours_loaded, ours_from_ref):
        assert tok.tgt_lang == "it" and tok.prefix_tokens == ref_loaded.prefix_tokens
        assert tok.all_special_tokens == ref_loaded.all_special_tokens
        assert tok(TEXTS)["input_ids"] == ref_loaded(TEXTS)["input_ids"]
        assert tok.batch_decode(tok(TEXTS)["input_ids"]) == ref_loaded.batch_decode(
            ref_loaded(TEXTS)["input_ids"]
        )
    assert json.loads((tmp_path / "ours" / "vocab.json").read_text()) == ours.encoder


def test_older_hub_layout(spm_dirs, tmp_path, quiet_transformers):
    """tokenizer_config.json without added_tokens_decoder + special_tokens_map.json, as on
    facebook/s2t-medium-mustc-multilingual-st."""
    d = spm_dirs["mustc"]
    out = tmp_path / "old"
    out.mkdir()
    for name in ("vocab.json", "sentencepiece.bpe.model"):
        (out / name).write_bytes((d / name).read_bytes())
    config = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "do_upper_case": False,
        "do_lower_case": False,
        "tgt_lang": None,
        "lang_codes": "mustc",
        "model_max_length": 1024,
        "special_tokens_map_file": None,
        "name_or_path": "facebook/s2t-medium-mustc-multilingual-st",
        "tokenizer_class": "Speech2TextTokenizer",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    special["additional_special_tokens"] = [
        f"<lang:{x}>" for x in "pt fr ru nl ro it es de".split()
    ]
    (out / "special_tokens_map.json").write_text(json.dumps(special))
    ours = Speech2TextTokenizer.from_pretrained(out)
    ref = quiet_transformers.Speech2TextTokenizer.from_pretrained(str(out))
    assert ours.model_max_length == ref.model_max_length == 1024
    assert ours.all_special_tokens == ref.all_special_tokens
    assert ours.prefix_tokens == ref.prefix_tokens
    long = " ".join(["kato remi"] * 400)
    assert ours(long, truncation=True)["input_ids"] == ref(long, truncation=True)["input_ids"]
    assert len(ours(long, truncation=True)["input_ids"]) == 1024
    assert ours(TEXTS)["input_ids"] == ref(TEXTS)["input_ids"]


def test_bad_inputs(spm_dirs, tmp_path):
    d = spm_dirs["unigram"]
    tok = Speech2TextTokenizer(d / "vocab.json", d / "sentencepiece.bpe.model")
    with pytest.raises(TypeError):
        tok([1, 2, 3])
    with pytest.raises(ValueError, match="padding"):
        tok("a", padding="sideways")
    with pytest.raises(ValueError, match="different lengths"):
        tok(TEXTS, return_tensors="np")
    with pytest.raises(OSError, match="missing tokenizer file"):
        Speech2TextTokenizer.from_pretrained(tmp_path)
