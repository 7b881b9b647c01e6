"""Speech2TextTokenizer's transformers API beyond plain encoding: pairs, targets, truncation
side, overflow with stride, special-tokens masks, added tokens, pad / encode /
prepare_for_model, and the special-token attributes. Each case runs ours and transformers' on
the same sentencepiece model (trained in conftest.py) and expects the same result or the same
exception type."""

import json

import numpy as np
import pytest

from s2t_jax.frontend.tokenizer import Speech2TextTokenizer

TEXTS = ["kato remi suan lo ber", "the lazy dog.", "qui", "ka mi re to su an zen pha"]
PAIRS = ["suan lo", "and the fox", "ber qui lo ka", "x"]


def files(spm_dirs, name="mustc"):
    d = spm_dirs[name]
    return d / "vocab.json", d / "sentencepiece.bpe.model"


@pytest.fixture(scope="module", params=["unigram", "mustc"])
def pair(request, spm_dirs, quiet_transformers):
    kwargs = dict(lang_codes="mustc", tgt_lang="it") if request.param == "mustc" else {}
    vocab, spm = files(spm_dirs, request.param)
    return (
        Speech2TextTokenizer(vocab, spm, **kwargs),
        quiet_transformers.Speech2TextTokenizer(str(vocab), str(spm), **kwargs),
    )


def assert_same(got, want):
    assert set(got) == set(want), (set(got), set(want))
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            assert isinstance(got[key], np.ndarray), key
            assert got[key].dtype == value.dtype, key
            np.testing.assert_array_equal(got[key], value)
        else:
            assert got[key] == value, key


def same_outcome(ours_fn, ref_fn, *args, **kwargs):
    """Both return the same encoding, or both raise the same exception type."""
    try:
        want = ref_fn(*args, **kwargs)
    except AssertionError:
        ours_fn(*args, **kwargs)  # transformers' batch of mixed overflow: ours works (see below)
        return
    except Exception as err:  # noqa: BLE001 - the type is what we compare
        with pytest.raises(type(err)):
            ours_fn(*args, **kwargs)
        return
    assert_same(ours_fn(*args, **kwargs), want)


CALL_KWARGS = [
    dict(),
    dict(return_token_type_ids=True, return_special_tokens_mask=True, return_length=True),
    dict(max_length=7),
    dict(max_length=7, truncation="only_first"),
    dict(max_length=7, truncation="only_second", return_overflowing_tokens=True, stride=1),
    dict(max_length=7, truncation=True, return_overflowing_tokens=True),
    dict(max_length=8, truncation=True, padding="max_length", pad_to_multiple_of=4),
    dict(max_length=10, truncation=True, padding="max_length", pad_to_multiple_of=4),
    dict(padding=True, return_tensors="np", return_token_type_ids=True),
    dict(add_special_tokens=False, return_special_tokens_mask=True),
]


@pytest.mark.parametrize("kwargs", CALL_KWARGS)
def test_pairs(pair, kwargs):
    """Speech2Text concatenates a pair between its prefix and </s>; BERT-style token types."""
    ours, ref = pair
    for text, text_pair in zip(TEXTS, PAIRS):
        same_outcome(ours, ref, text, text_pair, **kwargs)
    same_outcome(ours, ref, TEXTS, PAIRS, **kwargs)
    same_outcome(ours, ref, list(zip(TEXTS, PAIRS)), **kwargs)
    same_outcome(ours, ref, TEXTS, PAIRS[:2], **kwargs)


@pytest.mark.parametrize("side", ["right", "left"])
def test_truncation_side(spm_dirs, quiet_transformers, tmp_path, side):
    vocab, spm = files(spm_dirs)
    kw = dict(lang_codes="mustc", tgt_lang="de")
    ref = quiet_transformers.Speech2TextTokenizer(str(vocab), str(spm), truncation_side=side, **kw)
    built = Speech2TextTokenizer(vocab, spm, truncation_side=side, **kw)
    plain = Speech2TextTokenizer(vocab, spm, **kw)
    ref.save_pretrained(str(tmp_path / "ref"))
    loaded = Speech2TextTokenizer.from_pretrained(tmp_path / "ref")
    plain.save_pretrained(tmp_path / "plain")
    overridden = Speech2TextTokenizer.from_pretrained(tmp_path / "plain", truncation_side=side)
    for tok in (built, loaded, overridden):
        assert tok.truncation_side == side
        for kwargs in (
            dict(max_length=5),
            dict(max_length=6, truncation=True, padding="max_length"),
        ):
            assert_same(tok(TEXTS, **kwargs), ref(TEXTS, **kwargs))
            assert_same(tok(TEXTS[0], PAIRS[0], **kwargs), ref(TEXTS[0], PAIRS[0], **kwargs))
        assert tok.encode(TEXTS[0], max_length=4) == ref.encode(TEXTS[0], max_length=4)
        kw = dict(max_length=6, return_overflowing_tokens=True, stride=2)
        long = [TEXTS[0], TEXTS[3]]
        assert_same(tok(long, **kw), ref(long, **kw))
    # A call argument too (transformers ignores it there): same as a tokenizer built with it.
    assert_same(plain(TEXTS, max_length=5, truncation_side=side), ref(TEXTS, max_length=5))
    saved = json.loads((tmp_path / "plain" / "tokenizer_config.json").read_text())
    assert "truncation_side" not in saved
    loaded.save_pretrained(tmp_path / "again")
    assert (
        quiet_transformers.Speech2TextTokenizer.from_pretrained(
            str(tmp_path / "again")
        ).truncation_side
        == side
    )
    with pytest.raises(ValueError, match="truncation_side"):
        Speech2TextTokenizer(vocab, spm, truncation_side="middle")
    with pytest.raises(ValueError, match="truncation_side"):
        plain("kato", truncation_side="middle")


def test_overflowing_tokens_with_stride(pair):
    ours, ref = pair
    for stride in (0, 2, 50):
        kw = dict(max_length=5, truncation=True, return_overflowing_tokens=True, stride=stride)
        for text in TEXTS:
            assert_same(ours(text, **kw), ref(text, **kw))
        long = [TEXTS[0], TEXTS[3]]  # both overflow: transformers can batch them
        assert_same(ours(long, **kw), ref(long, **kw))
        assert_same(ours(long, return_tensors="np", **kw), ref(long, return_tensors="np", **kw))
        # Mixed batch: transformers asserts; we give every row (empty where nothing overflowed).
        mixed = ours(TEXTS, **kw)
        for i, text in enumerate(TEXTS):
            want = ref(text, **kw)
            assert mixed["overflowing_tokens"][i] == want.get("overflowing_tokens", [])
            assert mixed["num_truncated_tokens"][i] == want.get("num_truncated_tokens", 0)
    with pytest.raises(ValueError, match="longest_first"):
        ours(TEXTS[0], PAIRS[0], max_length=5, truncation=True, return_overflowing_tokens=True)


def test_text_target(pair):
    ours, ref = pair
    for kwargs in (dict(), dict(padding=True, return_tensors="np"), dict(max_length=4)):
        assert_same(ours(text_target=TEXTS, **kwargs), ref(text_target=TEXTS, **kwargs))
        assert_same(
            ours(PAIRS, text_target=TEXTS, **kwargs), ref(PAIRS, text_target=TEXTS, **kwargs)
        )
        assert_same(
            ours(text_target=TEXTS[0], text_pair_target=PAIRS[0], **kwargs),
            ref(text_target=TEXTS[0], text_pair_target=PAIRS[0], **kwargs),
        )
    with pytest.raises(ValueError):
        ref()
    with pytest.raises(ValueError):
        ours()


def test_encode_and_prepare_for_model(pair):
    ours, ref = pair
    for kwargs in (
        dict(padding="max_length", max_length=12),
        dict(max_length=4),
        dict(padding=True),
        dict(max_length=4, return_tensors="np"),
        dict(padding="max_length", max_length=12, padding_side="left"),
    ):
        for text in TEXTS:
            got, want = ours.encode(text, **kwargs), ref.encode(text, **kwargs)
            assert np.array_equal(got, want) and type(got) is type(want), (text, kwargs)
        got, want = (
            ours.encode(TEXTS[0], PAIRS[0], **kwargs),
            ref.encode(TEXTS[0], PAIRS[0], **kwargs),
        )
        assert np.array_equal(got, want) and type(got) is type(want), kwargs
    ids = ref.encode(TEXTS[0], add_special_tokens=False)
    pair_ids = ref.encode(PAIRS[2], add_special_tokens=False)
    for kwargs in (
        dict(),
        dict(add_special_tokens=False),
        dict(max_length=4, truncation=True, return_overflowing_tokens=True, stride=1),
        dict(max_length=4),  # max_length alone does not truncate here
        dict(padding="max_length", max_length=20, return_special_tokens_mask=True),
        dict(return_tensors="np", prepend_batch_axis=True),
        dict(return_tensors="np"),
    ):
        assert_same(ours.prepare_for_model(ids, **kwargs), ref.prepare_for_model(ids, **kwargs))
        same_outcome(ours.prepare_for_model, ref.prepare_for_model, ids, pair_ids, **kwargs)


def test_pad(pair):
    ours, ref = pair
    rows = [dict(ref(text, return_special_tokens_mask=True)) for text in TEXTS]
    for kwargs in (
        dict(),
        dict(padding="max_length", max_length=16),
        dict(padding=True, pad_to_multiple_of=8, padding_side="left"),
        dict(return_tensors="np"),
        dict(padding=False),
        dict(return_attention_mask=False),
    ):
        if kwargs.get("return_attention_mask") is False:
            # transformers then leaves a given attention_mask unpadded; we pad it. Without one
            # in the input, both return none.
            rows = [{k: v for k, v in r.items() if k != "attention_mask"} for r in rows]
        assert_same(ours.pad(rows, **kwargs), ref.pad(rows, **kwargs))
        as_dict = {key: [r[key] for r in rows] for key in rows[0]}
        assert_same(ours.pad(as_dict, **kwargs), ref.pad(as_dict, **kwargs))
        assert_same(ours.pad(rows[0], **kwargs), ref.pad(rows[0], **kwargs))
    arrays = {"input_ids": np.array([[5, 6, 7], [8, 9, 10]])}
    kw = dict(padding="max_length", max_length=5)
    assert_same(ours.pad(dict(arrays), **kw), ref.pad(dict(arrays), **kw))
    with pytest.raises(ValueError, match="input_ids"):
        ours.pad({"labels": [[1, 2]]})


def test_multiple_of_check(pair):
    ours, ref = pair
    kw = dict(max_length=10, truncation=True, padding="max_length", pad_to_multiple_of=4)
    for tok in (ours, ref):
        with pytest.raises(ValueError, match="multiple"):
            tok(TEXTS, **kw)
        with pytest.raises(ValueError, match="multiple"):
            tok.encode(TEXTS[0], **kw)
    kw["max_length"] = 12
    assert_same(ours(TEXTS, **kw), ref(TEXTS, **kw))


def test_special_token_attributes(pair):
    ours, ref = pair
    for name in (
        "bos_token",
        "eos_token",
        "unk_token",
        "pad_token",
        "sep_token",
        "cls_token",
        "mask_token",
        "bos_token_id",
        "eos_token_id",
        "unk_token_id",
        "pad_token_id",
        "sep_token_id",
        "cls_token_id",
        "mask_token_id",
        "special_tokens_map",
        "all_special_tokens",
        "all_special_ids",
        "extra_special_tokens",
        "pad_token_type_id",
        "max_len_single_sentence",
        "max_len_sentences_pair",
        "added_tokens_encoder",
        "model_input_names",
        "padding_side",
        "truncation_side",
        "vocab_size",
    ):
        assert getattr(ours, name) == getattr(ref, name), name
    assert {i: str(t) for i, t in ref.added_tokens_decoder.items()} == ours.added_tokens_decoder
    for pair_ in (False, True):
        assert ours.num_special_tokens_to_add(pair_) == ref.num_special_tokens_to_add(pair_)
    ids = ref("kato")["input_ids"] + [1, 3]
    assert ours.get_special_tokens_mask(
        ids, already_has_special_tokens=True
    ) == ref.get_special_tokens_mask(ids, already_has_special_tokens=True)
    assert ours.get_special_tokens_mask([5, 6], [7]) == ref.get_special_tokens_mask([5, 6], [7])
    assert ours.create_token_type_ids_from_sequences(
        [5, 6], [7]
    ) == ref.create_token_type_ids_from_sequences([5, 6], [7])
    encoding = ours("kato")
    assert encoding.data == ref("kato").data and isinstance(encoding.data, dict)


def _grow(tok):
    """The same additions, applied to either tokenizer -> what each call returned."""
    return [
        tok.add_tokens(["newword", "kato", "newword", ""]),
        tok.add_tokens("zz", special_tokens=True),
        tok.add_special_tokens({"additional_special_tokens": ["<x>"], "pad_token": "<mypad>"}),
        tok.add_special_tokens(
            {"extra_special_tokens": ["<y>"]}, replace_extra_special_tokens=False
        ),
        tok.add_tokens(["<lang:fr>", "</s>"]),
    ]


def test_added_tokens(spm_dirs, quiet_transformers, tmp_path):
    vocab, spm = files(spm_dirs)
    kw = dict(lang_codes="mustc", tgt_lang="fr")
    ours = Speech2TextTokenizer(vocab, spm, **kw)
    ref = quiet_transformers.Speech2TextTokenizer(str(vocab), str(spm), **kw)
    assert _grow(ours) == _grow(ref)
    text = "a newword kato zz <x>b<y> remi <mypad>"

    def check(tok):
        assert len(tok) == len(ref) and tok.get_vocab() == ref.get_vocab()
        for name in ("all_special_tokens", "all_special_ids", "extra_special_tokens"):
            assert getattr(tok, name) == getattr(ref, name), name
        assert tok.special_tokens_map == ref.special_tokens_map
        assert (tok.pad_token, tok.pad_token_id) == (ref.pad_token, ref.pad_token_id)
        assert tok.tokenize(text) == ref.tokenize(text)
        ids = ref(text)["input_ids"]
        assert tok(text)["input_ids"] == ids
        for skip in (False, True):
            assert tok.decode(ids, skip_special_tokens=skip) == ref.decode(
                ids, skip_special_tokens=skip
            )
        padded = ref([text, "ka"], padding=True)
        assert tok([text, "ka"], padding=True)["input_ids"] == padded["input_ids"]

    check(ours)
    written = ours.save_pretrained(tmp_path / "ours")
    assert any(p.endswith("added_tokens.json") for p in written)
    ref.save_pretrained(str(tmp_path / "ref"))
    check(Speech2TextTokenizer.from_pretrained(tmp_path / "ours"))
    check(Speech2TextTokenizer.from_pretrained(tmp_path / "ref"))
    check_ref = quiet_transformers.Speech2TextTokenizer.from_pretrained(str(tmp_path / "ours"))
    assert check_ref(text)["input_ids"] == ref(text)["input_ids"]
    assert check_ref.all_special_tokens == ref.all_special_tokens
    for bad in ({"foo_token": "<z>"}, {"extra_special_tokens": "<z>"}):
        with pytest.raises(ValueError):
            ref.add_special_tokens(bad)
        with pytest.raises(ValueError):
            ours.add_special_tokens(bad)
    with pytest.raises(TypeError):
        ref.add_tokens([3])
    with pytest.raises(TypeError):
        ours.add_tokens([3])


def test_unknown_arguments_are_named(pair):
    ours, _ = pair
    for kwargs in (dict(is_split_into_words=True), dict(return_offsets_mapping=True), dict(x=1)):
        with pytest.raises(TypeError, match=next(iter(kwargs))):
            ours("kato", **kwargs)
