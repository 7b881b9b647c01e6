"""Shared pieces for the training tests: the debug config, a Task, random batches."""

import jax
import numpy as np

from configs import debug
from s2t_jax.training.task import Task, model_config_from


def debug_config(**overrides):
    c = debug.get_config()
    for key, value in overrides.items():
        node = c
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return c


def make_task(vocab_size=12, specaugment=None, **overrides):
    config = debug_config(**overrides)
    return config, Task.from_config(config, model_config_from(config, vocab_size), specaugment)


def random_batch(batch=8, frames=24, target_len=8, feats=16, vocab=12, seed=0):
    """A padded batch as the loader makes it: some rows shorter, targets ending in eos."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(frames // 2, frames + 1, size=batch)
    tlen = rng.integers(2, target_len + 1, size=batch)
    mask = (np.arange(frames)[None, :] < lengths[:, None]).astype(np.int32)
    features = rng.normal(size=(batch, frames, feats)).astype(np.float32) * mask[..., None]
    target = np.full((batch, target_len), 1, np.int32)
    prev = np.full((batch, target_len), 1, np.int32)
    for b in range(batch):
        tokens = rng.integers(4, vocab, size=tlen[b] - 1)
        target[b, : tlen[b]] = np.append(tokens, 2)
        prev[b, : tlen[b]] = np.append(2, tokens)
    return {"features": features, "attention_mask": mask, "prev_tokens": prev, "target": target}


def split_batch(batch, parts):
    return [jax.tree.map(lambda x, i=i: x[i::parts], batch) for i in range(parts)]
