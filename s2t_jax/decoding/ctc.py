"""CTC on the encoder's frames: greedy output, prefix scores for the beam search, alignment.

A model trained with `ctc_weight > 0` has a CTC head, a linear map from encoder frames to the
vocabulary whose index `blank` (fairseq's `<s>`, 0) is the CTC blank. Three uses, all batched
and jittable, with padded frames masked by per-row lengths:

  * `ctc_greedy`: per-frame argmax, repeats merged, blanks dropped. The quickest look.
  * `prefix_score_init` / `prefix_score_step`: the CTC prefix probability of every hypothesis
    extended by each of its candidate tokens (Watanabe et al. 2017, the scorer of ESPnet's
    joint CTC/attention decoding), vectorised over hypotheses x candidates, so the beam search
    can add `ctc_weight * (psi(prefix + c) - psi(prefix))` to each candidate's score.
  * `forced_align`: the Viterbi path of a known label sequence (with blanks between labels),
    which gives each token's first and last frame: word timestamps.

Log probabilities throughout; -inf is a hard zero. Shapes: B rows, T frames, V vocabulary,
N hypotheses (rows x beams), K candidate tokens per hypothesis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite stand-in for log(0): keeps logaddexp free of inf - inf = nan


def ctc_log_probs(enc, head: dict):
    """Encoder frames [B, T, d_model] -> CTC log-probabilities f32 [B, T, V].

    `head` is the CTC head's params: `kernel` [d_model, V] and `bias` [V].
    """
    logits = enc @ head["kernel"].astype(enc.dtype) + head["bias"].astype(enc.dtype)
    return jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)


def ctc_greedy(log_probs, lengths, blank: int = 0, pad: int = 1):
    """Best path: (ids i32 [B, T] left-aligned and padded with `pad`, count i32 [B]).

    Frame t emits its argmax when it is within the row's length, not blank, and differs from
    frame t-1's argmax (a blank in between separates repeated tokens).
    """
    best = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)  # [B, T]
    frames = jnp.arange(best.shape[1])[None, :]  # [1, T]
    previous = jnp.pad(best[:, :-1], ((0, 0), (1, 0)), constant_values=-1)  # [B, T]
    keep = (frames < lengths[:, None]) & (best != blank) & (best != previous)  # [B, T]
    slot = jnp.cumsum(keep, axis=1) - 1  # [B, T] output position of each kept frame
    count = keep.sum(axis=1).astype(jnp.int32)  # [B]
    rows = jnp.arange(best.shape[0])[:, None]
    target = jnp.where(keep, slot, best.shape[1])  # dropped frames go to a spare column
    out = jnp.full((best.shape[0], best.shape[1] + 1), pad, jnp.int32)
    out = out.at[rows, target].set(jnp.where(keep, best, pad))
    return out[:, :-1], count


# --------------------------------------------------------------------------------------------
# Prefix scores
# --------------------------------------------------------------------------------------------


def prefix_score_init(log_probs, lengths, blank: int = 0):
    """The state of the empty prefix, for each row: (r [T, 2, B], psi [B]).

    r[t, 0] is log P(prefix, ending in a label at frame t), r[t, 1] the same ending in a blank;
    for the empty prefix only blanks have been emitted: r[t, 1] = sum of blank log-probs up to
    t. psi is the prefix's own score, 0 for the empty prefix. Frames past a row's length are
    never read (see `prefix_score_step`).
    """
    blanks = jnp.cumsum(jnp.swapaxes(log_probs[..., blank], 0, 1), axis=0)  # [T, B]
    r = jnp.stack([jnp.full_like(blanks, NEG_INF), blanks], axis=1)  # [T, 2, B]
    del lengths
    return r, jnp.zeros(log_probs.shape[0], jnp.float32)


def candidate_log_probs(log_probs_vt, rows, candidates, blank: int = 0):
    """Each hypothesis' log-probs of its candidates and of blank, gathered without repeating
    the [T, V] matrix per beam: log_probs_vt f32 [B, V, T] (the CTC log-probs, vocabulary
    first), rows i32 [N] (the batch row of each hypothesis), candidates i32 [N, K]
    -> (x f32 [N, T, K], x_blank f32 [N, T])."""
    x = log_probs_vt[rows[:, None], candidates]  # [N, K, T]
    return jnp.swapaxes(x, 1, 2), log_probs_vt[rows, blank]


def prefix_score_step(x, x_blank, lengths, r_prev, last, candidates, is_empty):
    """Extends each hypothesis by each of its K candidate tokens.

    x f32 [N, T, K], x_blank f32 [N, T]: the hypothesis' CTC log-probs of its candidates and of
    blank (`candidate_log_probs`); lengths i32 [N]; r_prev f32 [T, 2, N], the hypotheses'
    states; last i32 [N], each hypothesis' last token (ignored where `is_empty`); candidates
    i32 [N, K]; is_empty bool [N], True while the hypothesis holds no token yet (only the
    decoder's start token).

    Returns (psi f32 [N, K], r f32 [T, 2, N, K]): the prefix score of each extension, and its
    state for the next step. psi is log sum over t < length of P(prefix emitted by frame t-1,
    c first emitted at t). Ending the hypothesis (eos) scores `prefix_final` instead.
    """
    num_frames = x.shape[1]
    x = jnp.moveaxis(x, 1, 0)  # [T, N, K]
    x_blank = jnp.swapaxes(x_blank, 0, 1)[..., None]  # [T, N, 1]
    # phi[t]: the prefix complete by frame t, so that c can start at t + 1. After the same
    # token c only a path ending in blank may continue (else the repeat would merge).
    same = (candidates == last[:, None]) & ~is_empty[:, None]  # [N, K]
    r_n, r_b = r_prev[:, 0][..., None], r_prev[:, 1][..., None]  # [T, N, 1]
    phi = jnp.where(same[None], r_b, jnp.logaddexp(r_n, r_b))  # [T, N, K]
    frames = jnp.arange(num_frames)[:, None, None]  # [T, 1, 1]
    valid = frames < lengths[None, :, None]  # [T, N, 1]
    # Frame 0: c can only be the first label, i.e. the prefix must be empty.
    first = jnp.where(is_empty[:, None], x[0], NEG_INF)  # [N, K]
    start = (first, jnp.full_like(first, NEG_INF))

    def frame(carry, inputs):
        n, b = carry  # [N, K] each: r^n, r^b at t-1
        x_t, xb_t, phi_prev, valid_t = inputs
        new_n = jnp.logaddexp(n, phi_prev) + x_t
        new_b = jnp.logaddexp(n, b) + xb_t
        # psi gains the paths where c starts at t (the prefix complete at t-1).
        gain = jnp.where(valid_t, phi_prev + x_t, NEG_INF)
        return (new_n, new_b), (new_n, new_b, gain)

    _, (n_rest, b_rest, gains) = jax.lax.scan(
        frame, start, (x[1:], x_blank[1:], phi[:-1], valid[1:])
    )
    r_n = jnp.concatenate([start[0][None], n_rest], axis=0)  # [T, N, K]
    r_b = jnp.concatenate([start[1][None], b_rest], axis=0)  # [T, N, K]
    psi = jnp.logaddexp(
        jnp.where(valid[0], first, NEG_INF), jax.nn.logsumexp(gains, axis=0)
    )  # [N, K]
    return psi, jnp.stack([r_n, r_b], axis=1)  # [N, K], [T, 2, N, K]


def prefix_final(r, lengths):
    """log P(the whole utterance is exactly this prefix): r at each row's last frame.

    r f32 [T, 2, N] -> [N]. This is the score of ending the hypothesis (eos).
    """
    at = jnp.clip(lengths - 1, 0, r.shape[0] - 1)  # [N]
    end = jnp.take_along_axis(r, at[None, None, :], axis=0)[0]  # [2, N]
    return jnp.logaddexp(end[0], end[1])


# --------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------


def forced_align(log_probs, lengths, labels, label_lengths, blank: int = 0):
    """Viterbi alignment of each row's labels to its frames.

    log_probs f32 [B, T, V]; lengths i32 [B]; labels i32 [B, L] (no blanks), label_lengths
    i32 [B]. The label sequence is expanded with blanks, blank l1 blank l2 ... blank (S = 2L+1
    states); a path moves by 0 or 1 state per frame, or by 2 from a label to the next different
    label. Returns (token_of_frame i32 [B, T]: the index into `labels` that frame t is aligned
    to, -1 for blank or padding; score f32 [B], the best path's log-probability, NEG_INF-ish
    when the labels need more frames than the row has).
    """
    batch, num_frames, _ = log_probs.shape
    num_states = 2 * labels.shape[1] + 1
    state = jnp.arange(num_states)
    is_label = state % 2 == 1  # [S]
    label_index = state // 2  # [S] which label an odd state holds
    tokens = jnp.where(
        is_label[None, :],
        jnp.take(labels, jnp.clip(label_index, 0, labels.shape[1] - 1), axis=1),
        blank,
    )  # [B, S]
    used = state[None, :] < 2 * label_lengths[:, None] + 1  # [B, S]
    prev2 = jnp.pad(tokens[:, :-2], ((0, 0), (2, 0)), constant_values=-1)  # [B, S]
    can_skip = is_label[None, :] & (tokens != prev2)  # [B, S] may come from s - 2
    emit = jnp.take_along_axis(log_probs, tokens[:, None, :], axis=2)  # [B, T, S]
    emit = jnp.where(used[:, None, :], emit, NEG_INF)

    init = jnp.where(state[None, :] < 2, emit[:, 0], NEG_INF)  # [B, S]

    def frame(delta, inputs):
        emit_t, t = inputs  # [B, S], scalar
        stay = delta
        step1 = jnp.pad(delta[:, :-1], ((0, 0), (1, 0)), constant_values=NEG_INF)
        step2 = jnp.pad(delta[:, :-2], ((0, 0), (2, 0)), constant_values=NEG_INF)
        step2 = jnp.where(can_skip, step2, NEG_INF)
        options = jnp.stack([stay, step1, step2], axis=-1)  # [B, S, 3]
        move = jnp.argmax(options, axis=-1).astype(jnp.int32)  # [B, S]
        best = jnp.max(options, axis=-1) + emit_t
        active = (t < lengths)[:, None]  # frames past the row's length change nothing
        return jnp.where(active, best, delta), jnp.where(active, move, 0)

    frames = jnp.arange(1, num_frames)
    delta, moves = jax.lax.scan(frame, init, (jnp.moveaxis(emit[:, 1:], 1, 0), frames))
    # The path ends in the last label or the blank after it.
    last = 2 * label_lengths  # [B]
    end_scores = jnp.stack(
        [
            jnp.take_along_axis(delta, last[:, None], axis=1)[:, 0],
            jnp.take_along_axis(delta, jnp.maximum(last - 1, 0)[:, None], axis=1)[:, 0],
        ],
        axis=1,
    )  # [B, 2]
    pick = jnp.argmax(end_scores, axis=1)
    end = jnp.where(pick == 0, last, jnp.maximum(last - 1, 0))  # [B]
    score = jnp.max(end_scores, axis=1)

    def back(s, move_t):
        # move_t [B, S]: how the state at frame t+1 was reached; s is that state.
        previous = s - jnp.take_along_axis(move_t, s[:, None], axis=1)[:, 0]
        return previous, s

    first, states = jax.lax.scan(back, end, moves, reverse=True)  # states [T-1, B]: frames 1..
    states = jnp.concatenate([first[None], states], axis=0).T  # [B, T]
    frame_index = jnp.arange(num_frames)[None, :]
    token = jnp.where((states % 2 == 1) & (frame_index < lengths[:, None]), states // 2, -1).astype(
        jnp.int32
    )
    return token, score
