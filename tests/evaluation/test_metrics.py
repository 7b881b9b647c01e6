"""WER and BLEU against hand-counted edits and direct library calls."""

import jiwer
import pytest
import sacrebleu

from s2t_jax.evaluation.metrics import (
    TextNormalizer,
    bleu,
    chrf,
    score,
    utterance_errors,
    word_error_rate,
)

REFS = ["the cat sat on the mat", "a b c d", "hello world", "one two three four five"]
HYPS = ["the cat sat on a mat", "a x c", "hello world again", "one two three four five"]
# Hand-counted: 1 sub; 1 sub + 1 del; 1 ins; 0.  -> 4 edits over 6+4+2+5 = 17 words.


def test_wer_matches_hand_count_and_jiwer():
    out = word_error_rate(REFS, HYPS)
    assert (out["errors"], out["ref_words"]) == (4, 17)
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (2, 1, 1)
    assert out["wer"] == pytest.approx(100 * 4 / 17)
    assert out["wer"] == pytest.approx(100 * jiwer.wer(REFS, HYPS))
    assert [utterance_errors(r, h) for r, h in zip(REFS, HYPS)] == [(1, 6), (2, 4), (1, 2), (0, 5)]


def test_empty_hypothesis_counts_as_deletions():
    out = word_error_rate(["a b c", "d e"], ["", "d e"])
    assert (out["errors"], out["deletions"], out["ref_words"]) == (3, 3, 5)


def test_normaliser_follows_fairseq_options():
    norm = TextNormalizer(tokenizer="13a", lowercase=True, remove_punctuation=True)
    assert norm("Hello, World! It's here.") == "hello world it's here"
    assert TextNormalizer(character_tokenization=True)("ab c") == "a b c"
    out = word_error_rate(["Hello, world."], ["hello world"], norm)
    assert out["errors"] == 0
    assert word_error_rate(["Hello, world."], ["hello world"])["errors"] == 2


def test_bleu_and_chrf_match_sacrebleu():
    refs = ["The quick brown fox jumps over the lazy dog.", "It is raining today."]
    hyps = ["The quick brown fox jumped over the lazy dog.", "It rains today."]
    assert bleu(refs, hyps) == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert 0 < bleu(refs, hyps) < 100
    assert chrf(refs, hyps) == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    char = bleu(refs, hyps, char_level=True)
    assert char == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="char").score)
    assert char > bleu(refs, hyps)


def test_score_without_references_and_with_an_infinite_wer():
    assert score([], [], TextNormalizer()) == {}
    out = score([""], ["extra words"], TextNormalizer())
    assert out["wer"] is None and out["insertions"] == 2
