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


def load_pretrained_encoder(path: str, params: dict, batch_stats: dict | None = None):
    """fairseq's --load-pretrained-encoder-from: copy encoder weights from a model dir (ours or
    transformers'), a fairseq .pt, or another training workdir.

    -> (params, batch_stats). A Conformer's encoder brings its batch-norm running statistics
    along (they belong to its weights); `batch_stats` are this run's fresh ones, or None.
    """
    training = find_training_workdir(path) if os.path.isdir(path) else None
    if training is not None:
        trained = load_train_checkpoint(*training)  # numpy, as the run saved them
        source, source_stats = trained.params, trained.batch_stats
    else:
        model = Speech2TextForConditionalGeneration.from_pretrained(path)
        source, source_stats = model.params, model.batch_stats
    new, old = source["encoder"], params["model"]["encoder"]
    shapes_new = jax.tree.map(np.shape, new)
    shapes_old = jax.tree.map(np.shape, old)
    if (source_stats is None) != (batch_stats is None):
        kinds = ("a Conformer", "a Transformer")
        raise ValueError(
            f"{path}: holds {kinds[source_stats is None]} encoder, this model has "
            f"{kinds[batch_stats is None]} one"
        )
    if shapes_new != shapes_old:
        raise ValueError(f"{path}: encoder shapes differ from this model's")
    new = jax.tree.map(lambda n, o: np.asarray(n, o.dtype), new, old)
    if batch_stats is not None:
        stats = jax.tree.map(lambda x: np.asarray(x, np.float32), source_stats["encoder"])
        batch_stats = {**batch_stats, "encoder": stats}
    logging.info("loaded the pretrained encoder from %s", path)
    return {**params, "model": {**params["model"], "encoder": new}}, batch_stats
