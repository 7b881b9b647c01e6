"""Evaluation metrics: WER with jiwer, BLEU and chrF with sacrebleu.

Text is normalised the way fairseq's speech_to_text `EvaluationTokenizer` does it (a sacrebleu
tokenizer such as 13a, optional lower-casing, optional removal of all-punctuation tokens,
optional character-level splitting), so scores are comparable with fairseq's `--scoring wer`
and `--eval-bleu` numbers.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections.abc import Sequence

import jiwer
import sacrebleu


@dataclasses.dataclass(frozen=True)
class TextNormalizer:
    """fairseq's EvaluationTokenizer options."""

    tokenizer: str = "none"  # a sacrebleu tokenizer name: none, 13a, intl, char, zh, ...
    lowercase: bool = False
    remove_punctuation: bool = False
    character_tokenization: bool = False

    def __call__(self, text: str) -> str:
        if self.tokenizer != "none":
            text = sacrebleu.BLEU(tokenize=self.tokenizer).tokenizer(text)
        if self.remove_punctuation:
            text = " ".join(w for w in text.split() if not _all_punctuation(w))
        if self.character_tokenization:
            text = " ".join(" ".join(w) for w in text.split())
        if self.lowercase:
            text = text.lower()
        return " ".join(text.split())


def _all_punctuation(word: str) -> bool:
    return all(unicodedata.category(c)[0] == "P" for c in word)


def utterance_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(word edits, reference words) for one utterance, on already-normalised text."""
    ref_words = len(reference.split())
    if not ref_words:
        return len(hypothesis.split()), 0
    if not hypothesis.split():
        return ref_words, ref_words
    out = jiwer.process_words(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions, ref_words


def word_error_rate(references, hypotheses, normalizer: TextNormalizer | None = None) -> dict:
    """Corpus WER (total edits / total reference words), in percent, with its parts."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    norm = normalizer or TextNormalizer()
    refs = [norm(r) for r in references]
    hyps = [norm(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.split()]
    extra_insertions = sum(len(h.split()) for r, h in zip(refs, hyps) if not r.split())
    words = sum(len(r.split()) for r, _ in pairs)
    if not pairs:
        return {
            "wer": 0.0 if not extra_insertions else float("inf"),
            "errors": extra_insertions,
            "ref_words": 0,
            "substitutions": 0,
            "deletions": 0,
            "insertions": extra_insertions,
        }
    # jiwer cannot align an empty hypothesis; give it a placeholder-free treatment.
    subs = dels = ins = 0
    nonempty = [(r, h) for r, h in pairs if h.split()]
    if nonempty:
        out = jiwer.process_words([r for r, _ in nonempty], [h for _, h in nonempty])
        subs, dels, ins = out.substitutions, out.deletions, out.insertions
    dels += sum(len(r.split()) for r, h in pairs if not h.split())
    ins += extra_insertions
    errors = subs + dels + ins
    return {
        "wer": 100.0 * errors / words,
        "errors": errors,
        "ref_words": words,
        "substitutions": subs,
        "deletions": dels,
        "insertions": ins,
    }


def bleu(references, hypotheses, char_level: bool = False, tokenize: str = "13a") -> float:
    """Corpus BLEU on detokenised text; char_level splits into characters (for zh/ja, CoVoST)."""
    tok = "char" if char_level else tokenize
    return sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tok).score


def chrf(references, hypotheses) -> float:
    return sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score


def score(
    references: Sequence[str],
    hypotheses: Sequence[str],
    normalizer: TextNormalizer,
    char_bleu: bool = False,
) -> dict:
    """results.json's metrics: WER (jiwer, on normalised text) and BLEU / chrF (sacrebleu, on
    detokenised text); {} without references, None for a value that is not finite."""
    if not references:
        return {}
    wer = word_error_rate(references, hypotheses, normalizer)
    out = {
        "wer": wer["wer"],
        "wer_errors": wer["errors"],
        "wer_ref_words": wer["ref_words"],
        "substitutions": wer["substitutions"],
        "deletions": wer["deletions"],
        "insertions": wer["insertions"],
        "bleu": bleu(references, hypotheses, char_level=char_bleu),
        "chrf": chrf(references, hypotheses),
    }
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()
    }
