"""Starting a run from a pretrained encoder (fairseq's --load-pretrained-encoder-from).

Why: speech translation trains much faster from an ASR encoder; only the encoder is copied, so
the decoder (often with another vocabulary) starts fresh.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging

from s2t_jax.checkpoints.workdir import find_training_workdir, load_train_checkpoint
from s2t_jax.modeling import Speech2TextForConditionalGeneration


def load_pretrained_encoder(path: str, params: dict) -> dict:
    """fairseq's --load-pretrained-encoder-from: copy encoder weights from a model dir (ours or
    transformers'), a fairseq .pt, or another training workdir."""
    training = find_training_workdir(path) if os.path.isdir(path) else None
    if training is not None:
        _, source, _ = load_train_checkpoint(*training)  # numpy, as the run saved them
    else:
        source = Speech2TextForConditionalGeneration.from_pretrained(path).params
    new, old = source["encoder"], params["model"]["encoder"]
    shapes_new = jax.tree.map(np.shape, new)
    shapes_old = jax.tree.map(np.shape, old)
    if shapes_new != shapes_old:
        raise ValueError(f"{path}: encoder shapes differ from this model's")
    new = jax.tree.map(lambda n, o: np.asarray(n, o.dtype), new, old)
    logging.info("loaded the pretrained encoder from %s", path)
    return {**params, "model": {**params["model"], "encoder": new}}
