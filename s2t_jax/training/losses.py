"""fairseq's training criteria: label-smoothed cross-entropy (+ accuracy) and auxiliary CTC.

Every function returns SUMS over the batch; the train step divides by the number of target
tokens of the whole update (fairseq's sample_size), which is what makes gradient accumulation
and data parallelism give the same update as one big batch.

Label smoothing is fairseq's `label_smoothed_nll_loss`: with V the vocabulary size and
eps_i = eps / (V - 1),
    loss = (1 - eps - eps_i) * nll + eps_i * smooth,   smooth = sum_v -log p(v),
summed over non-pad target positions. (This puts 1 - eps on the gold token and eps / (V - 1)
on every other one; the gold token's own eps_i share sits inside `smooth`.) Losses are in nats;
fairseq's logs show base 2, perplexity is the same either way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def label_smoothed_nll_loss(
    logits, target, epsilon: float, pad_id: int, ignore_prefix_size: int = 0
):
    """logits f32 [batch, len, vocab], target i32 [batch, len] -> dict of scalar sums:
    loss, nll_loss, n_correct, n_total (non-pad positions after the ignored prefix)."""
    if ignore_prefix_size:
        logits = logits[:, ignore_prefix_size:]
        target = target[:, ignore_prefix_size:]
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    lse = jax.nn.logsumexp(logits, axis=-1)  # [batch, len]
    gold = jnp.take_along_axis(logits, target[..., None], axis=-1)[..., 0]  # [batch, len]
    nll = lse - gold  # -log p(target)
    smooth = vocab * lse - logits.sum(axis=-1)  # sum_v -log p(v)
    mask = target != pad_id
    nll_sum = jnp.sum(jnp.where(mask, nll, 0.0))
    smooth_sum = jnp.sum(jnp.where(mask, smooth, 0.0))
    eps_i = epsilon / (vocab - 1)
    loss = (1.0 - epsilon - eps_i) * nll_sum + eps_i * smooth_sum
    correct = (jnp.argmax(logits, axis=-1) == target) & mask
    return {
        "loss": loss,
        "nll_loss": nll_sum,
        "n_correct": correct.sum().astype(jnp.float32),
        "n_total": mask.sum().astype(jnp.float32),
    }


def ctc_loss(
    logits,
    frame_mask,
    target,
    pad_id: int,
    eos_id: int,
    blank_id: int = 0,
    ignore_prefix_size: int = 0,
):
    """Summed CTC loss of encoder-frame logits against the target tokens (eos and pad dropped).

    logits f32 [batch, frames, vocab]; frame_mask bool [batch, frames]; target [batch, len].
    The blank is fairseq's choice, index 0 (`<s>`, never a target token). Utterances whose
    labels cannot be aligned (too few frames) contribute 0, as torch's zero_infinity=True.
    """
    labels = target[:, ignore_prefix_size:]
    valid = (labels != pad_id) & (labels != eos_id)  # [batch, len]; a prefix of each row
    per_seq = optax.ctc_loss(
        logits.astype(jnp.float32),
        1.0 - frame_mask.astype(jnp.float32),
        labels,
        1.0 - valid.astype(jnp.float32),
        blank_id=blank_id,
    )  # [batch]
    repeats = jnp.sum((labels[:, 1:] == labels[:, :-1]) & valid[:, 1:], axis=1)
    need = valid.sum(axis=1) + repeats  # frames a CTC path needs
    feasible = (need <= frame_mask.sum(axis=1)) & (valid.sum(axis=1) > 0)
    return jnp.sum(jnp.where(feasible, per_seq, 0.0))
