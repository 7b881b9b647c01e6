"""The evals hook of the train loop: dev loss, and greedy-decoding WER or BLEU, timed.

What it adds to `validation.evaluate`: the decoder is built once per run (one compile per
bucket), and with sharded params (fsdp) the weights are gathered once per evaluation rather
than at every decoded token, because decoding is a loop of small steps.

The greedy search can use the scorers of eval.py (decoding/fusion.py): `config.wer.ctc_weight`
(joint CTC/attention decoding with the CTC head being trained) and `config.wer.lm` +
`config.wer.lm_weight` (shallow fusion with a trained LM), so the dev WER a run reports is
the one its decoding setup will give.
"""

from __future__ import annotations

import dataclasses
import time

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from s2t_jax.decoding.fusion import FusionParams
from s2t_jax.decoding.search import make_generate_fn
from s2t_jax.decoding.settings import resolve_settings
from s2t_jax.parallel.mesh import process_rows
from s2t_jax.training import validation


class Evals:
    """`evals(step, params, writer)` -> the valid metrics, also written under "valid"."""

    def __init__(
        self,
        config,
        loader,
        put,
        eval_step,
        model_config,
        data,
        data_sharding,
        state_sharding,
    ):
        self.config, self.loader, self.put, self.eval_step = config, loader, put, eval_step
        self.data, self.data_sharding = data, data_sharding
        self.encoder = data.target_encoder()  # decodes references and hypotheses
        self.generate_fn = None
        self.fused, self.lm_params = False, None
        if config.wer.enabled:
            settings, self.lm_params = fusion_settings(config, model_config)
            self.fused = settings.fused
            self.generate_fn = make_generate_fn(model_config, settings)
        self.params_sharded = not all(
            s.is_fully_replicated for s in jax.tree.leaves(state_sharding)
        )
        self.replicate = jax.jit(lambda p: p, out_shardings=NamedSharding(data_sharding.mesh, P()))

    def generate(self, params):
        """The decoder for these params, or None when WER is off."""
        if self.generate_fn is None or not (self.params_sharded or self.fused):
            return self.generate_fn
        whole = self.replicate(params["model"]) if self.params_sharded else params["model"]
        if self.fused:
            head = params.get("ctc") if self.config.wer.get("ctc_weight", 0.0) else None
            whole = FusionParams(whole, head, self.lm_params)

        def generate(_, feats, mask, **kw):
            return self.generate_fn(whole, feats, mask, **kw)

        return generate

    def __call__(self, step: int, params, writer) -> dict:
        start = time.perf_counter()
        metrics = validation.evaluate(
            self.loader,
            self.put,
            self.eval_step,
            params,
            self.generate(params),
            self.encoder,
            self.config.wer.max_batches,
            local_rows=lambda ids: process_rows(ids, self.data_sharding),
            metric=self.config.wer.get("metric", "wer"),
            force_prefix=self.data.prepend_tgt_lang_tag,
        )
        metrics["seconds"] = time.perf_counter() - start
        writer.write(step, "valid", metrics)
        return metrics


def fusion_settings(config, model_config):
    """-> (greedy search settings of validation decoding, the LM's params or None), with
    config.wer's scorers (checked by
    name: a CTC weight needs the CTC head that config.ctc_weight > 0 trains, an LM needs its
    weight and the weight its LM, and the LM's vocabulary must be the model's)."""
    wer = config.wer
    ctc_weight = float(wer.get("ctc_weight", 0.0))
    lm_path, lm_weight = wer.get("lm", ""), float(wer.get("lm_weight", 0.0))
    if ctc_weight < 0 or lm_weight < 0:
        raise ValueError("config.wer.ctc_weight and config.wer.lm_weight must be >= 0")
    if ctc_weight and not config.ctc_weight > 0:
        raise ValueError(
            f"config.wer.ctc_weight={ctc_weight} decodes with the CTC head, and this run trains "
            "none: set config.ctc_weight > 0 too"
        )
    if bool(lm_path) != bool(lm_weight):
        raise ValueError("config.wer.lm and config.wer.lm_weight go together (shallow fusion)")
    settings = resolve_settings(model_config, num_beams=1, max_length=wer.max_length)
    lm_config = lm_params = None
    if lm_path:
        from s2t_jax.checkpoints.lm import load_lm

        lm_config, lm_params = load_lm(lm_path)
        if lm_config.vocab_size != model_config.vocab_size:
            raise ValueError(
                f"config.wer.lm={lm_path}: its vocabulary has {lm_config.vocab_size} entries, "
                f"the model's {model_config.vocab_size}"
            )
    settings = dataclasses.replace(
        settings, ctc_weight=ctc_weight, lm_weight=lm_weight, lm_config=lm_config
    )
    return settings, lm_params
