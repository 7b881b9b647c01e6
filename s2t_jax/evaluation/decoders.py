"""The decoders eval.py can run besides the sharded attention search: joint CTC/attention
decoding and LM fusion (generate's scorers), CTC greedy, and attention rescoring of the CTC
N-best. They share `ShardedGenerator`'s interface (round_batch, local_rows, a call from
features and per-row forced BOS to ids, compile time and shapes for results.json), and run on
one process.

Compile time is measured apart from decoding, as the sharded search measures it: the fused
attention search is lowered and compiled ahead of its first call per input shape; the CTC
decoders jit inside their calls, so their compile time is what JAX reports for tracing,
lowering and compiling during the call (jax.monitoring's compile events, in this thread).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time

import jax
import numpy as np

from s2t_jax.decoding.sharded import forced_bos_rows

DECODERS = ("attention", "ctc_greedy", "rescoring")

# What JAX reports while it compiles: tracing to a jaxpr, lowering to MLIR, the backend compile.
COMPILE_EVENTS = frozenset(
    {
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    }
)
_clock = threading.local()  # seconds of COMPILE_EVENTS in this thread, while `compile_clock` runs
_listening = False


def _on_duration(event: str, duration_secs: float, **kwargs) -> None:
    if event in COMPILE_EVENTS and getattr(_clock, "running", False):
        _clock.seconds += duration_secs


@contextlib.contextmanager
def compile_clock():
    """Yields a dict whose "seconds" is, on exit, the time JAX spent compiling in this thread
    inside the block (other threads, such as the batch loader, are not counted)."""
    global _listening
    if not _listening:  # jax.monitoring keeps listeners for the process: register once
        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _listening = True
    out = {"seconds": 0.0}
    _clock.running, _clock.seconds = True, 0.0
    try:
        yield out
    finally:
        out["seconds"], _clock.running = _clock.seconds, False


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
        if self.lm is not None and not self.lm_weight:
            raise ValueError("--lm needs --lm_weight (the LM's weight in shallow fusion, e.g. 0.3)")
        if self.lm_weight and self.lm is None:
            raise ValueError(f"--lm_weight={self.lm_weight} needs a language model (--lm)")


def fused_search(model, settings, choice: DecoderChoice, lm=None):
    """(settings, params) of the attention search with the scorers `choice` turns on (joint
    CTC/attention decoding, LM fusion, a length bonus; decoding/fusion.py), for
    `make_generate_fn`: params are FusionParams (model, CTC head, LM). `lm`: (LMConfig, params)
    as load_lm returns it, or None."""
    from s2t_jax.decoding.fusion import FusionParams

    head = None
    if choice.ctc_weight:
        head = getattr(model, "ctc_head", None)
        if head is None:
            raise ValueError(
                f"--ctc_weight={choice.ctc_weight} needs a CTC head, and this model has none "
                "(train with ctc_weight > 0, or load a fairseq .pt with encoder.ctc_proj)"
            )
    lm_config, lm_params = lm if lm is not None else (None, None)
    settings = dataclasses.replace(
        settings,
        num_return_sequences=1,
        forced_bos_token_id=None,  # per row, an input of each call
        ctc_weight=float(choice.ctc_weight or 0.0),
        lm_weight=float(choice.lm_weight or 0.0),
        length_bonus=float(choice.length_bonus or 0.0),
        lm_config=lm_config,
    )
    return settings, FusionParams(model.variables, head, lm_params)


class LocalGenerator:
    """Decodes each batch on this process with generate's scorers or a CTC decoder.

    The attention search takes the forced first token per row (multilingual batches, one
    compile per input shape); the CTC decoders produce no language tag and ignore it.
    """

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
        self._fn = self._params = None
        if choice.decoder == "attention":
            from s2t_jax.decoding.search import make_generate_fn

            fused, self._params = fused_search(model, settings, choice, self.lm)
            self._fn = make_generate_fn(model.config, fused)
        self._compiled: dict = {}  # features shape -> the compiled fused search
        self._shapes: set = set()
        self.compile_seconds = 0.0

    @property
    def shapes(self) -> list[tuple]:
        return sorted(self._shapes)

    @property
    def compile_count(self) -> int:
        """Ahead-of-time compilations of the attention search (one per input shape); the CTC
        decoders' jits are not counted here."""
        return len(self._compiled)

    def round_batch(self, batch_size: int) -> int:
        return max(int(batch_size), 1)

    def local_rows(self, batch_size: int) -> slice:
        return slice(0, batch_size)

    def __call__(self, features, mask, forced_bos=None) -> np.ndarray:
        """features [rows, frames, F], mask [rows, frames], forced_bos None, an int or [rows]
        (-1 = none) -> ids [rows, length] int32 (start token first)."""
        from s2t_jax.decoding.ctc_decode import attention_rescoring, ctc_greedy_generate

        self._shapes.add(tuple(features.shape))
        c = self.choice
        if c.decoder == "attention":
            bos = forced_bos_rows(forced_bos, features.shape[0])  # [rows]
            key = tuple(features.shape)
            if key not in self._compiled:
                start = time.perf_counter()
                lowered = self._fn.lower(self._params, features, mask, bos)
                self._compiled[key] = lowered.compile()
                self.compile_seconds += time.perf_counter() - start
            ids, _ = self._compiled[key](self._params, features, mask, bos)
            return np.asarray(ids)
        with compile_clock() as compiled:
            if c.decoder == "ctc_greedy":
                ids = ctc_greedy_generate(self.model, features, mask)
            else:
                ids = attention_rescoring(
                    self.model,
                    features,
                    mask,
                    beam_size=c.ctc_beam,
                    ctc_weight=c.ctc_weight or 0.5,
                )
        self.compile_seconds += compiled["seconds"]
        return np.asarray(ids)
