"""The decoders eval.py can run besides the sharded attention search: joint CTC/attention
decoding and LM fusion (generate's scorers), CTC greedy, and attention rescoring of the CTC
N-best. They share `ShardedGenerator`'s interface (round_batch, local_rows, a call from
features to ids, compile time and shapes for results.json), and run on one process.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

DECODERS = ("attention", "ctc_greedy", "rescoring")


@dataclasses.dataclass
class DecoderChoice:
    decoder: str = "attention"
    ctc_weight: float = 0.0
    lm: str | None = None
    lm_weight: float = 0.0
    length_bonus: float = 0.0
    ctc_beam: int = 10  # N-best of the CTC prefix beam search (rescoring)

    @property
    def plain(self) -> bool:
        """The sharded attention search, as without any of these options."""
        return (
            self.decoder == "attention"
            and not self.ctc_weight
            and self.lm is None
            and not self.length_bonus
        )

    def check(self) -> None:
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder={self.decoder!r}: expected one of {DECODERS}")
        if self.lm is not None and self.decoder != "attention":
            raise ValueError(f"--lm fuses into the attention search, not decoder={self.decoder!r}")


class LocalGenerator:
    """Decodes each batch on this process with `model.generate`'s scorers or a CTC decoder."""

    num_devices = 1

    def __init__(self, model, settings, choice: DecoderChoice):
        if jax.process_count() > 1:
            raise ValueError(
                f"decoder={choice.decoder}, ctc_weight, lm: these run on one process; "
                "use one process (or the plain attention search) for multi-process evaluation"
            )
        choice.check()
        self.model, self.settings, self.choice = model, settings, choice
        self.lm = None
        if choice.lm is not None:
            from s2t_jax.checkpoints.lm import load_lm

            self.lm = load_lm(choice.lm)
        self.compile_seconds = 0.0
        self._shapes: set = set()

    @property
    def shapes(self) -> list[tuple]:
        return sorted(self._shapes)

    def round_batch(self, batch_size: int) -> int:
        return max(int(batch_size), 1)

    def local_rows(self, batch_size: int) -> slice:
        return slice(0, batch_size)

    def __call__(self, features, mask, forced_bos: int | None = None) -> np.ndarray:
        from s2t_jax.decoding.ctc_decode import attention_rescoring, ctc_greedy_generate

        self._shapes.add(tuple(features.shape))
        c, s = self.choice, self.settings
        if c.decoder == "ctc_greedy":
            ids = ctc_greedy_generate(self.model, features, mask)
        elif c.decoder == "rescoring":
            ids = attention_rescoring(
                self.model, features, mask, beam_size=c.ctc_beam, ctc_weight=c.ctc_weight or 0.5
            )
        else:
            ids = self.model.generate(
                features,
                mask,
                num_beams=s.num_beams,
                max_length=s.max_length,
                length_penalty=s.length_penalty,
                forced_bos_token_id=forced_bos,
                ctc_weight=c.ctc_weight or None,
                lm=self.lm,
                lm_weight=c.lm_weight or None,
                length_bonus=c.length_bonus or None,
                buckets=None,
            )
        return np.asarray(ids)
