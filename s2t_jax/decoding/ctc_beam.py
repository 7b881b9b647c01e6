"""CTC prefix beam search on the host: the N best label sequences of one utterance's CTC head.

WeNet's `attention_rescoring` first takes the N best prefixes of a CTC prefix beam search, then
lets the attention decoder score them all in one teacher-forced batch (`decoding/rescoring.py`).
The search merges every frame path that collapses to the same prefix, which a jitted search
over a fixed beam cannot do cheaply; it runs in numpy per utterance, over only the few tokens
each frame makes likely (`token_beam`), so it costs a few ms for hundreds of frames.
"""

from __future__ import annotations

import collections

import numpy as np


def _logaddexp(a: float, b: float) -> float:
    return float(np.logaddexp(a, b))


def ctc_prefix_beam_search(
    log_probs: np.ndarray, beam_size: int, blank: int = 0, token_beam: int | None = None
) -> list[tuple[tuple[int, ...], float]]:
    """log_probs f32 [T, V] (one utterance, its valid frames only) -> [(prefix, log P)], best
    first, at most `beam_size` of them.

    Each prefix's probability is the sum over every frame path that collapses to it (blank
    and non-blank endings tracked apart, as in Hannun et al. 2014). `token_beam` (default
    `beam_size`) limits the tokens tried at each frame to that frame's most likely ones.
    """
    token_beam = token_beam or beam_size
    neg_inf = -np.inf
    # prefix -> (log P ending in blank, log P ending in its last label)
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, neg_inf)}
    for frame in np.asarray(log_probs, np.float64):
        top = np.argsort(-frame)[:token_beam]
        after = collections.defaultdict(lambda: [neg_inf, neg_inf])
        for prefix, (p_blank, p_label) in beams.items():
            total = _logaddexp(p_blank, p_label)
            for token in top:
                token = int(token)
                p = float(frame[token])
                if token == blank:
                    slot = after[prefix]
                    slot[0] = _logaddexp(slot[0], total + p)
                    continue
                last = prefix[-1] if prefix else None
                extended = after[prefix + (token,)]
                if token == last:
                    # The same label again: a new one only after a blank; else it merges.
                    extended[1] = _logaddexp(extended[1], p_blank + p)
                    same = after[prefix]
                    same[1] = _logaddexp(same[1], p_label + p)
                else:
                    extended[1] = _logaddexp(extended[1], total + p)
        ranked = sorted(after.items(), key=lambda kv: -_logaddexp(*kv[1]))[:beam_size]
        beams = {prefix: (b, n) for prefix, (b, n) in ranked}
    out = [(prefix, _logaddexp(b, n)) for prefix, (b, n) in beams.items()]
    return sorted(out, key=lambda item: -item[1])
