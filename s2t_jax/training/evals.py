"""The evals hook of the train loop: dev loss, and greedy-decoding WER or BLEU, timed.

What it adds to `validation.evaluate`: the decoder is built once per run (one compile per
bucket), and with sharded params (fsdp) the weights are gathered once per evaluation rather
than at every decoded token, because decoding is a loop of small steps.
"""

from __future__ import annotations

import time

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from s2t_jax.decoding.search import make_generate_fn
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
        if config.wer.enabled:
            self.generate_fn = make_generate_fn(
                model_config, num_beams=1, max_length=config.wer.max_length
            )
        self.params_sharded = not all(
            s.is_fully_replicated for s in jax.tree.leaves(state_sharding)
        )
        self.replicate = jax.jit(lambda p: p, out_shardings=NamedSharding(data_sharding.mesh, P()))

    def generate(self, params):
        """The decoder for these params, or None when WER is off."""
        if self.generate_fn is None or not self.params_sharded:
            return self.generate_fn
        whole = self.replicate(params["model"])

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
