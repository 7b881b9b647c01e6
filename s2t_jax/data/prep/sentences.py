"""Sentences for the demo corpus, drawn from a small grammar and word list shipped in the repo.

Why a grammar: the demo must run with no data and no network, yet its text should look like
speech (varied, with numbers and articles right) and split into train/dev/test with no
sentence in common. `demo_words/grammar.json` holds templates with `{slot}` names; a seeded
rng fills them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

GRAMMAR_PATH = Path(__file__).with_name("demo_words") / "grammar.json"
MIN_WORDS, MAX_WORDS = 4, 12


def _load_grammar() -> dict:
    return json.loads(GRAMMAR_PATH.read_text())


def _number_words(n: int, g: dict) -> str:
    if n < 10:
        return g["units"][n - 1]
    if n < 20:
        return g["teens"][n - 10]
    tens, unit = divmod(n, 10)
    return g["tens"][tens - 2] + (" " + g["units"][unit - 1] if unit else "")


def _expand(text: str, g: dict, rng: np.random.Generator) -> str:
    def slot(m: re.Match) -> str:
        name = m.group(1)
        if name == "number":  # counts of plural nouns: two .. ninety nine
            return _number_words(int(rng.integers(2, 100)), g)
        choices = g[name]
        return _expand(choices[int(rng.integers(len(choices)))], g, rng)

    return re.sub(r"\{(\w+)\}", slot, text)


def _fix_articles(words: list[str]) -> list[str]:
    return [
        "an" if w == "a" and i + 1 < len(words) and words[i + 1][0] in "aeiou" else w
        for i, w in enumerate(words)
    ]


def make_sentences(n: int, seed: int | np.random.SeedSequence, grammar: dict | None = None):
    """`n` distinct sentences of 4-12 lowercase words, in a seeded random order.

    Distinct, so that splitting the list gives train/dev/test with no sentence in common.
    """
    g = grammar or _load_grammar()
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}  # insertion-ordered set
    for _ in range(50 * n + 1000):
        if len(seen) == n:
            break
        template = g["templates"][int(rng.integers(len(g["templates"])))]
        words = _fix_articles(_expand(template, g, rng).split())
        if MIN_WORDS <= len(words) <= MAX_WORDS:
            seen.setdefault(" ".join(words), None)
    if len(seen) < n:
        raise ValueError(f"the grammar gave only {len(seen)} distinct sentences, {n} asked for")
    return list(seen)
