"""Re-segmentation by minimum edit distance (mwerSegmenter's algorithm) on hand-computed cases,
and against an exhaustive search over every way to cut small hypotheses."""

import itertools

import numpy as np
import pytest

from s2t_jax.evaluation.resegment import resegment


def _edit_distance(a, b) -> int:
    """Plain Levenshtein distance between two word lists (the textbook table)."""
    table = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = min(
                table[i - 1][j] + 1,
                table[i][j - 1] + 1,
                table[i - 1][j - 1] + (a[i - 1] != b[j - 1]),
            )
    return table[len(a)][len(b)]


@pytest.mark.parametrize(
    "hypothesis, references, pieces, distance",
    [
        # Exact words: the reference's own cuts, distance 0.
        ("a b c d e f", ["a b", "c d e", "f"], ["a b", "c d e", "f"], 0),
        # A substitution stays in its segment.
        ("a x c d", ["a b", "c d"], ["a x", "c d"], 1),
        # A word deleted at the end of segment 1: the cut still falls before "c".
        ("a c d", ["a b", "c d"], ["a", "c d"], 1),
        # A word deleted at the start of segment 2.
        ("a b d", ["a b", "c d"], ["a b", "d"], 1),
        # An inserted word at the boundary: equal cost either side, the earlier segment gets it.
        ("a b z c d", ["a b", "c d"], ["a b z", "c d"], 1),
        # Two inserted words inside segment 2 do not move the cut.
        ("a b c y y d", ["a b", "c d"], ["a b", "c y y d"], 2),
        # Empty hypothesis: every reference word is a deletion.
        ("", ["a b", "c"], ["", ""], 3),
        # More segments than words: the unmatched segments get nothing (cost 1 each).
        ("b d", ["a", "b", "c", "d"], ["", "b", "", "d"], 2),
        # An empty reference segment gets nothing when its neighbours take every word.
        ("a b", ["a", "", "b"], ["a", "", "b"], 0),
        # One segment: the whole hypothesis, distance = plain edit distance.
        ("a b c", ["a c"], ["a b c"], 1),
    ],
)
def test_known_answers(hypothesis, references, pieces, distance):
    assert resegment(hypothesis, references) == (pieces, distance)


def test_key_compares_normalised_words_but_keeps_the_hypothesis_words():
    assert resegment("The Cat sat", ["the cat", "sat"]) == (["The Cat", "sat"], 2)
    assert resegment("The Cat sat", ["the cat", "sat"], key=str.lower) == (["The Cat", "sat"], 0)
    assert resegment(["x", "y"], [["x"], ["y"]]) == (["x", "y"], 0)  # word lists too


def test_matches_exhaustive_search_on_random_cases():
    """The distance is the minimum over every way to cut the hypothesis into N pieces, and the
    returned pieces (consecutive, covering it all) achieve it."""
    rng = np.random.default_rng(0)
    for _ in range(150):
        hyp = list(rng.choice(list("abcd"), size=rng.integers(0, 7)))
        refs = [
            list(rng.choice(list("abcd"), size=rng.integers(0, 4)))
            for _ in range(rng.integers(1, 4))
        ]
        best = min(
            sum(_edit_distance(r, hyp[a:b]) for r, a, b in zip(refs, (0, *cuts), (*cuts, len(hyp))))
            for cuts in itertools.combinations_with_replacement(range(len(hyp) + 1), len(refs) - 1)
        )
        pieces, distance = resegment(hyp, refs)
        assert distance == best, (hyp, refs)
        words = [p.split() for p in pieces]
        assert sum(words, []) == hyp
        assert sum(_edit_distance(r, w) for r, w in zip(refs, words)) == best


def test_bad_references_are_refused():
    with pytest.raises(ValueError, match="at least one reference segment"):
        resegment("a b", [])
    with pytest.raises(TypeError, match="list of segments"):
        resegment("a b", "a b")
