"""Writes tests/assets/espnet/ctc_prefix_scores.npz: ESPnet's own CTC prefix scores on fixed inputs.

Run with a separate environment that has ESPnet and PyTorch (never the project's .venv):

    python3 -m venv /work/espnet-venv
    /work/espnet-venv/bin/pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl numpy
    /work/espnet-venv/bin/pip install --no-deps espnet==202511
    /work/espnet-venv/bin/python tools/make_espnet_ctc_fixture.py

(`pip install espnet` with its dependencies would replace torch with a CUDA build; the two
scorers below import only torch and numpy, so --no-deps is enough.)

Inputs: random CTC log-probabilities for a batch of 2 utterances, 8 frames padded, valid
lengths 8 and 5 (the padded frames of the second row hold random values too: a scorer must
mask them), a vocabulary of 7 with blank 0 and eos (= sos) 6, ESPnet's convention. For each
prefix in PREFIXES (labels 1..5) and each row, the prefix score psi(prefix + c) of every
token c is recorded, as computed by

  * `espnet.nets.ctc_prefix_score.CTCPrefixScore` (numpy, one utterance, used by the
    non-batched BeamSearch) on each row's valid frames only, stepping through the prefix one
    label at a time and keeping the state of the label taken: `psi_numpy` [2, P, 7];
  * `espnet.nets.ctc_prefix_score.CTCPrefixScoreTH` (torch, batched, the scorer of
    BatchBeamSearch) on the padded batch with its lengths, over the full vocabulary:
    `psi_batched` [2, P, 7]; and with a pre-beam (`scoring_ids`, 4 candidates per hypothesis,
    the others left at ESPnet's logzero): `psi_partial` [2, P, 7], `scoring_ids` [P, 2, 4].

For c = eos ESPnet records log P(the utterance is exactly the prefix); for c = blank, logzero
(-1e10). The test (tests/decoding/test_ctc_espnet.py) runs s2t_jax.decoding.ctc on the same
inputs.

Also tests/assets/espnet/joint_beam_search.npz: ESPnet's joint CTC/attention `BeamSearch` on a
toy whose "attention decoder" is a bigram table (see `joint_best`): the best labels and score
per weight and utterance, which our fused beam search must reproduce.
"""

from __future__ import annotations

import json
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from espnet.nets.ctc_prefix_score import CTCPrefixScore, CTCPrefixScoreTH

OUT = Path(__file__).resolve().parent.parent / "tests" / "assets" / "espnet"
BLANK, EOS, VOCAB, FRAMES = 0, 6, 7, 8
LENGTHS = (8, 5)
# Labels 1..5. Repeats need a blank between them; (4, 4, 4) needs exactly 5 frames and
# (5, 5, 5, 5) needs 7, more than the second row has: an impossible prefix there.
PREFIXES = ((), (1,), (1, 1), (2, 3), (3, 1, 3), (1, 2, 1, 2), (4, 4, 4), (5, 5, 5, 5))


def make_log_probs(seed: int = 0) -> np.ndarray:
    """[2, FRAMES, VOCAB] float32 log-softmax of scaled normals (peaky, as a trained head)."""
    logits = 2.5 * np.random.default_rng(seed).normal(size=(len(LENGTHS), FRAMES, VOCAB))
    logits -= logits.max(axis=-1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return log_probs.astype(np.float32)


def numpy_scores(log_probs: np.ndarray) -> np.ndarray:
    """psi_numpy [2, P, VOCAB] from CTCPrefixScore, each row on its valid frames."""
    out = np.zeros((len(LENGTHS), len(PREFIXES), VOCAB), np.float32)
    every = np.arange(VOCAB)
    for b, length in enumerate(LENGTHS):
        scorer = CTCPrefixScore(log_probs[b, :length], BLANK, EOS, np)
        for p, prefix in enumerate(PREFIXES):
            state = scorer.initial_state()
            y = [EOS]  # sos = eos in ESPnet
            for token in prefix:
                _, states = scorer(y, every, state)  # states [VOCAB, T, 2]
                state = states[token]
                y.append(token)
            out[b, p] = scorer(y, every, state)[0]
    return out


def batched_scores(log_probs: np.ndarray, scoring=None) -> np.ndarray:
    """psi [2, P, VOCAB] from CTCPrefixScoreTH on the padded batch, one hypothesis per row.

    scoring: None (the full vocabulary) or [P, 2, K] candidate ids for the last step (a pre-beam);
    the steps through the prefix score the full vocabulary.
    """
    out = np.zeros((len(LENGTHS), len(PREFIXES), VOCAB), np.float32)
    for p, prefix in enumerate(PREFIXES):
        # The scorer overwrites the padded frames of its input, so it gets a copy.
        scorer = CTCPrefixScoreTH(
            torch.tensor(log_probs).clone(), torch.tensor(LENGTHS), BLANK, EOS
        )
        y = [[EOS], [EOS]]
        state = None
        for token in prefix:
            _, new = scorer(y, state)
            best = torch.tensor([[token], [token]])  # [batch, 1]: one hypothesis, this label
            state = scorer.index_select_state(new, best)
            y = [row + [token] for row in y]
        ids = None if scoring is None else torch.tensor(scoring[p])
        _, new = scorer(y, state, ids)
        out[:, p] = new[1].numpy()  # absolute log psi [batch * 1 hyp, VOCAB]
    return out


# Joint CTC/attention beam search (ESPnet's BeamSearch, maxlenratio 0) on a toy: the
# "attention decoder" is a bigram table over the same 7 tokens, the CTC head's log-probs are
# given. Two utterances (10 and 7 frames, padded to 10 for our batched search).
JOINT_LENGTHS = (10, 7)
JOINT_WEIGHTS = (0.3, 0.5)
JOINT_BEAM = 4


def make_joint_inputs(seed: int = 2):
    """(ctc log-probs [2, 10, VOCAB] f32, bigram log-probs [VOCAB, VOCAB] f32).

    Each CTC row follows a random label path (blank between labels) plus noise, so the
    scorers agree only in part; the bigram rows are log-softmax of scaled normals with blank
    unlikely (the decoder never proposes it)."""
    rng = np.random.default_rng(seed)
    frames = max(JOINT_LENGTHS)
    logits = 1.5 * rng.normal(size=(len(JOINT_LENGTHS), frames, VOCAB))
    for b in range(len(JOINT_LENGTHS)):
        path = rng.choice([BLANK, 1, 2, 3, 4, 5], size=frames, p=[0.4] + [0.12] * 5)
        logits[b, np.arange(frames), path] += 3.0
    logits[..., EOS] -= 4.0  # eos is no CTC label
    ctc = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    bigram = 2.0 * rng.normal(size=(VOCAB, VOCAB))
    bigram[:, BLANK] = -12.0
    bigram -= np.log(np.exp(bigram).sum(-1, keepdims=True))
    return ctc.astype(np.float32), bigram.astype(np.float32)


def joint_best(ctc: np.ndarray, bigram: np.ndarray):
    """ESPnet BeamSearch's best hypothesis per weight and utterance: (labels [W, B, L] padded
    with -1, scores [W, B]), L the longest."""
    from espnet.nets.beam_search import BeamSearch
    from espnet.nets.scorer_interface import ScorerInterface
    from espnet.nets.scorers.ctc import CTCPrefixScorer

    class Bigram(ScorerInterface):
        def score(self, y, state, x):
            return torch.tensor(bigram[int(y[-1])]), None

    class GivenLogProbs:  # CTCPrefixScorer calls ctc.log_softmax(encoder states)
        def log_softmax(self, x):
            return x

    best = {}
    for w, weight in enumerate(JOINT_WEIGHTS):
        for b, length in enumerate(JOINT_LENGTHS):
            search = BeamSearch(
                scorers={"decoder": Bigram(), "ctc": CTCPrefixScorer(GivenLogProbs(), EOS)},
                weights={"decoder": 1.0 - weight, "ctc": weight},
                beam_size=JOINT_BEAM,
                vocab_size=VOCAB,
                sos=EOS,
                eos=EOS,
                pre_beam_score_key="full",
            )
            hyp = search(torch.tensor(ctc[b, :length]), maxlenratio=0.0, minlenratio=0.0)[0]
            # yseq: sos, labels, eos; a hypothesis that chose eos at the last step (maxlen)
            # gets a second, unscored eos appended there: drop every trailing eos.
            labels = [int(t) for t in hyp.yseq[1:]]
            while labels and labels[-1] == EOS:
                labels.pop()
            best[w, b] = (labels, float(hyp.score))
    longest = max(len(y) for y, _ in best.values())
    labels = np.full((len(JOINT_WEIGHTS), len(JOINT_LENGTHS), longest), -1, np.int32)
    scores = np.zeros((len(JOINT_WEIGHTS), len(JOINT_LENGTHS)), np.float32)
    for (w, b), (y, score) in best.items():
        labels[w, b, : len(y)] = y
        scores[w, b] = score
    return labels, scores


def main() -> None:
    log_probs = make_log_probs()
    # Pre-beam candidates: 4 per row and prefix, always including eos and a repeat of the
    # prefix's last label where there is one.
    rng = np.random.default_rng(1)
    scoring = np.zeros((len(PREFIXES), len(LENGTHS), 4), np.int64)
    for p, prefix in enumerate(PREFIXES):
        for b in range(len(LENGTHS)):
            must = [EOS] + ([prefix[-1]] if prefix else [])
            rest = [t for t in rng.permutation(np.arange(1, EOS)) if t not in must]
            scoring[p, b] = sorted(must + rest[: 4 - len(must)])
    prefixes = np.full((len(PREFIXES), max(map(len, PREFIXES))), -1, np.int32)
    for p, prefix in enumerate(PREFIXES):
        prefixes[p, : len(prefix)] = prefix
    versions = {name: metadata.version(name) for name in ("espnet", "torch", "numpy")}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(
        OUT / "ctc_prefix_scores.npz",
        log_probs=log_probs,
        lengths=np.array(LENGTHS, np.int32),
        prefixes=prefixes,
        prefix_lengths=np.array([len(p) for p in PREFIXES], np.int32),
        blank=np.int32(BLANK),
        eos=np.int32(EOS),
        psi_numpy=numpy_scores(log_probs),
        psi_batched=batched_scores(log_probs),
        psi_partial=batched_scores(log_probs, scoring),
        scoring_ids=scoring.astype(np.int32),
        versions=json.dumps(versions),
    )
    ctc, bigram = make_joint_inputs()
    labels, scores = joint_best(ctc, bigram)
    np.savez(
        OUT / "joint_beam_search.npz",
        ctc_log_probs=ctc,
        lengths=np.array(JOINT_LENGTHS, np.int32),
        bigram=bigram,
        weights=np.array(JOINT_WEIGHTS, np.float32),
        beam=np.int32(JOINT_BEAM),
        blank=np.int32(BLANK),
        eos=np.int32(EOS),
        best_labels=labels,
        best_scores=scores,
        versions=json.dumps(versions),
    )
    print("wrote", os.path.relpath(OUT / "joint_beam_search.npz"), labels.tolist(), scores)
    print("wrote", os.path.relpath(OUT / "ctc_prefix_scores.npz"), versions)


if __name__ == "__main__":
    main()
