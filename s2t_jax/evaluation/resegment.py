"""Re-segment a hypothesis to the reference's segments by minimum word edit distance.

Speech translation of a whole talk gives one hypothesis word sequence whose own segmentation
(the segmenter's cuts) has nothing to do with the reference's sentences, so sentence-level
metrics such as BLEU cannot be computed on it directly. mwerSegmenter (Matusov et al., 2005,
"Evaluating machine translation output with automatic sentence segmentation") re-cuts the
hypothesis into exactly as many consecutive pieces as there are reference segments, choosing
the cut points that minimise the summed word edit distance between each piece and its
reference segment; BLEU is then computed on those pieces as on any segmented test set. That is
what `resegment` does (our own implementation of the algorithm, not a port of its code).

Dynamic programming. With hypothesis words h[0:M] and reference segments r_1..r_N:

    D_0[j] = 0 if j == 0 else inf
    D_k[j] = min over i <= j of  D_{k-1}[i] + ED(r_k, h[i:j])

and the answer is D_N[M]. Computing ED for every (i, j) would cost O(M^2) per segment;
instead segment k runs one Levenshtein table over its reference words whose first row is not
0, 1, 2, ... but C[0][j] = min over i <= j of D_{k-1}[i] + (j - i) (the piece starts at some i;
hypothesis words before j then count as insertions into it). The table's last row is D_k. Each
cell's three moves are the usual ones (match / substitution, a reference word deleted, a
hypothesis word inserted); a row is computed at once over all j, the insertion chain being a
running minimum (C[p][j] = j + min over i <= j of (A[i] - i)). So the cost is O(M * R) time
for R reference words in all, as one Levenshtein alignment of the talk, with one byte of
back-pointer per cell.

Ties (equal totals) are broken the same way each time: a diagonal step before a deletion,
before an insertion, and a hypothesis word that could end one segment or start the next (as an
insertion either way) goes to the earlier segment.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# Back-pointers, one per table cell.
_DIAG, _DEL, _INS, _START = 0, 1, 2, 3


def _words(text_or_words) -> list[str]:
    if isinstance(text_or_words, str):
        return text_or_words.split()
    return [str(w) for w in text_or_words]


def resegment(
    hypothesis,
    references: Sequence,
    key: Callable[[str], str] | None = None,
) -> tuple[list[str], int]:
    """Cuts `hypothesis` into len(references) consecutive pieces with the least summed word
    edit distance to the references, segment by segment.

    hypothesis: a string (split on whitespace) or a list of words; references: the reference
    segments, each a string or a list of words. key: applied to every word before comparing
    (e.g. str.lower); the pieces keep the hypothesis' own words. Returns (pieces, distance):
    pieces[k] is the hypothesis words given to references[k], joined by single spaces ("" for
    none), and distance the summed edit distance (substitutions + deletions + insertions).
    """
    if isinstance(references, str):
        raise TypeError("references: expected a list of segments, got one string")
    if len(references) == 0:
        raise ValueError("references: expected at least one reference segment, got none")
    hyp = _words(hypothesis)
    refs = [_words(r) for r in references]
    norm = key or (lambda w: w)
    vocab: dict[str, int] = {}
    hyp_ids = np.asarray([vocab.setdefault(norm(w), len(vocab)) for w in hyp], np.int64)  # [M]
    m = len(hyp)
    j = np.arange(m + 1)  # [M + 1] hypothesis positions
    big = m + sum(len(r) for r in refs) + 1  # above any real cost
    prev = np.where(j == 0, 0, big)  # D_0 [M + 1]
    tables = []  # per segment: (pointers [L_k + 1, M + 1] int8, D_k)
    for ref in refs:
        pointers = np.empty((len(ref) + 1, m + 1), np.int8)
        row, pointers[0] = _with_insertions(prev, _START, j)  # first row: the piece's start
        for p, word in enumerate(ref, start=1):
            ref_id = vocab.get(norm(word), -1)
            diag = np.full(m + 1, big)
            diag[1:] = row[:-1] + (hyp_ids != ref_id)  # [M] match 0 / substitution 1
            up = row + 1  # the reference word deleted
            step = np.where(diag <= up, diag, up)
            row, pointers[p] = _with_insertions(step, np.where(diag <= up, _DIAG, _DEL), j)
        tables.append(pointers)
        prev = row
    distance = int(prev[m])
    pieces: list[list[str]] = [[] for _ in refs]
    pos = m
    for k in range(len(refs) - 1, -1, -1):  # back from the end of the last segment
        pointers, p = tables[k], len(refs[k])
        while True:
            move = pointers[p, pos]
            if move == _START:
                break
            if move == _INS:
                pos -= 1
                pieces[k].append(hyp[pos])
            elif move == _DIAG:
                p, pos = p - 1, pos - 1
                pieces[k].append(hyp[pos])
            else:  # _DEL
                p -= 1
        if k == 0 and pos != 0:  # D_0 is finite only at 0
            raise AssertionError("back-trace did not reach the hypothesis start")
    return [" ".join(reversed(piece)) for piece in pieces], distance


def _with_insertions(values: np.ndarray, pointers, j: np.ndarray):
    """A table row from its no-insertion candidates `values` [M + 1] (with their back-pointers):
    row[j] = min(values[j], row[j - 1] + 1) = j + min over i <= j of (values[i] - i), the
    chain of insertions being a running minimum. Where an insertion only ties, the other move
    is kept."""
    row = j + np.minimum.accumulate(values - j)  # [M + 1]
    moves = np.where(values <= row, pointers, _INS).astype(np.int8)
    return row, moves
