"""A model on disk -> (config, params), and back: our model directories (config.json + Orbax
`params/`), transformers' (config.json + safetensors or pytorch_model.bin) and fairseq `.pt`.

Why here and not in the model classes: conversion, export and checkpoint averaging write model
directories too. With the formats in the checkpoints stage they need no user-API class, and
`modeling.py`, which builds its `from_pretrained` / `save_pretrained` on these two functions,
stays at the top of the import graph.
"""

from __future__ import annotations

import logging
import os
import shutil

import jax
import numpy as np

from s2t_jax.checkpoints import orbax_io
from s2t_jax.checkpoints.fairseq import load_fairseq_variables
from s2t_jax.checkpoints.hf import hf_state_dict_to_params, load_hf_state_dict, save_hf_dir
from s2t_jax.models.config import Speech2TextConfig
from s2t_jax.models.params import abstract_params

PARAMS_DIR = "params"
CTC_DIR = "ctc"
BATCH_STATS_DIR = "batch_stats"  # a Conformer's batch-norm running statistics  # our format's CTC head, when the model has one: {"kernel" [d, V], "bias" [V]}
# Files that travel with a model directory (tokenizer, feature extractor, generation defaults).
SIDE_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "sentencepiece.bpe.model",
    "generation_config.json",
    "added_tokens.json",
)


def weights_kind(path: str) -> str:
    """ "ours", "transformers" or "fairseq"; raises naming the path when it is none of them."""
    if os.path.isfile(path):
        if path.endswith((".pt", ".bin")):
            return "fairseq"
        raise ValueError(f"{path}: expected a model directory or a fairseq .pt file")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such model directory or checkpoint")
    if os.path.isdir(os.path.join(path, PARAMS_DIR)):
        return "ours"
    return "transformers"


def load_model_dir(
    path: str,
    with_lm_head: bool = True,
    with_ctc: bool = False,
    with_extras: bool = False,
    **overrides,
):
    """Any of the three formats -> (Speech2TextConfig, params as numpy float32); with
    `with_ctc` (config, params, CTC head or None); with `with_extras` (config, params,
    {"ctc_head", "batch_stats"}), the batch-norm statistics of a Conformer included.

    with_lm_head=False reads the weights as transformers' Speech2TextModel (no LM head).
    """
    kind = weights_kind(path)
    batch_stats = None
    if kind == "fairseq":
        config, variables = load_fairseq_variables(path)
        params, ctc = split_ctc_head(variables["params"])
        batch_stats = variables.get("batch_stats")
        config = config.replace(**overrides)
    else:
        config = Speech2TextConfig.from_pretrained(path, **overrides)
        ctc = None
        if kind == "ours":
            params = _restore_ours(path, config, with_lm_head)
            ctc = load_ctc_head(path, config)
            batch_stats = _restore_batch_stats(path, config)
        else:
            state = load_hf_state_dict(path)
            if not with_lm_head:
                state = {k: v for k, v in state.items() if not k.startswith("lm_head.")}
                state = {
                    ("model." + k if not k.startswith("model.") else k): v for k, v in state.items()
                }
            params = hf_state_dict_to_params(state, config, with_lm_head)
    if with_extras:
        return config, params, {"ctc_head": ctc, "batch_stats": batch_stats}
    return (config, params, ctc) if with_ctc else (config, params)


def _restore_ours(path: str, config, with_lm_head: bool):
    target = abstract_params(config.replace(param_dtype="float32"), with_lm_head)
    try:
        params = orbax_io.restore_params(os.path.join(path, PARAMS_DIR), target)
    except ValueError as e:  # Orbax: the saved tree has other arrays than the target
        raise ValueError(
            f"{path}: {PARAMS_DIR}/ does not hold the arrays config.json describes "
            f"({str(e).splitlines()[0][:300]})"
        ) from e
    _check_shapes(path, params, target)
    return params


def _restore_batch_stats(path: str, config):
    """A Conformer's batch-norm statistics (`batch_stats/`), checked against config.json."""
    from s2t_jax.models.params import fresh_batch_stats

    target = fresh_batch_stats(config)
    directory = os.path.join(path, BATCH_STATS_DIR)
    if target is None:
        return None
    if not os.path.isdir(directory):
        raise ValueError(
            f"{path}: a Conformer's {BATCH_STATS_DIR}/ (batch-norm statistics) is missing"
        )
    stats = orbax_io.restore_params(directory)
    _check_shapes(path, stats, target)
    return jax.tree.map(lambda x: np.asarray(x, np.float32), stats)


def load_ctc_head(path: str, config) -> dict | None:
    """The CTC head saved beside our params (`ctc/`), or None. transformers' format has no CTC
    head; a fairseq .pt's `encoder.ctc_proj` comes with its params (`split_ctc_head`)."""
    directory = os.path.join(path, CTC_DIR)
    if weights_kind(path) != "ours" or not os.path.isdir(directory):
        return None
    head = orbax_io.restore_params(directory)
    want = {"kernel": (config.d_model, config.vocab_size), "bias": (config.vocab_size,)}
    got = {k: tuple(np.shape(v)) for k, v in head.items()} if isinstance(head, dict) else {}
    if got != want:
        raise ValueError(f"{directory}: CTC head shapes {got}, config.json gives {want}")
    return {k: np.asarray(v, np.float32) for k, v in head.items()}


def split_ctc_head(params) -> tuple[dict, dict | None]:
    """(model params, CTC head or None): a fairseq checkpoint's loader keeps the head as
    params["ctc_proj"] and a training state as params["ctc"]; the model keeps it apart."""
    if not isinstance(params, dict):
        return params, None
    for key in ("ctc_proj", "ctc"):
        if key in params:
            rest = {k: v for k, v in params.items() if k != key}
            return rest, {k: np.asarray(v, np.float32) for k, v in params[key].items()}
    return params, None


def _check_shapes(path: str, params, target) -> None:
    """Orbax restores what was saved, whatever the target says: a config.json that disagrees
    with the saved params must not load as a silently different model."""
    got = {
        jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)
    }
    want = {
        jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(target)
    }
    for name in sorted(set(got) | set(want)):
        if got.get(name) != want.get(name):
            raise ValueError(
                f"{path}: params{name} has shape {got.get(name, 'missing')} in {PARAMS_DIR}/, but "
                f"config.json gives {want.get(name, 'no such array')}"
            )


def save_model_dir(
    path: str,
    config,
    params,
    transformers_format: bool = False,
    source_dir: str | None = None,
    ctc_head: dict | None = None,
    batch_stats: dict | None = None,
) -> None:
    """Ours: config.json + Orbax params/ (+ ctc/ for a CTC head). transformers_format:
    config.json + safetensors, without the CTC head, which transformers' Speech2Text lacks
    (a warning says so).

    The tokenizer, feature-extractor and generation files of `source_dir` are copied along.
    """
    os.makedirs(path, exist_ok=True)
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
    if transformers_format:
        if config.encoder_type != "transformer":
            raise ValueError(
                f"{path}: transformers has no {config.encoder_type} Speech2Text encoder; save "
                "this model in our format (transformers_format=False)"
            )
        if ctc_head is not None:
            logging.warning(
                "%s: transformers' Speech2Text has no CTC head; the export leaves it out "
                "(save in our format to keep it for joint decoding and timestamps)",
                path,
            )
        save_hf_dir(params, config, path)
    else:
        config.save_pretrained(path)
        orbax_io.save_params(os.path.join(path, PARAMS_DIR), params)
        ctc_dir = os.path.join(path, CTC_DIR)
        if ctc_head is not None:
            head = {k: np.asarray(v, np.float32) for k, v in ctc_head.items()}
            orbax_io.save_params(ctc_dir, head)
        elif os.path.isdir(ctc_dir):
            shutil.rmtree(ctc_dir)  # a stale head from an earlier save must not load
        stats_dir = os.path.join(path, BATCH_STATS_DIR)
        if batch_stats is not None:
            stats = jax.tree.map(lambda x: np.asarray(x, np.float32), batch_stats)
            orbax_io.save_params(stats_dir, stats)
        elif os.path.isdir(stats_dir):
            shutil.rmtree(stats_dir)
    if source_dir and os.path.abspath(source_dir) != os.path.abspath(path):
        for name in SIDE_FILES:
            src = os.path.join(source_dir, name)
            if os.path.exists(src):
                shutil.copy2(src, os.path.join(path, name))
