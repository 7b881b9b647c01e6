"""s2t-jax: the fairseq/transformers Speech2Text model in JAX/Flax.

Public names are imported lazily, so `import s2t_jax` stays cheap and a tool that needs only the
tokenizer does not pay for building the model.
"""

import importlib

_EXPORTS = {
    "Speech2TextConfig": "s2t_jax.models.config",
    "Speech2TextForConditionalGeneration": "s2t_jax.modeling",
    "Speech2TextModel": "s2t_jax.modeling",
    "Speech2TextFeatureExtractor": "s2t_jax.frontend.extractor",
    "Speech2TextTokenizer": "s2t_jax.frontend.tokenizer",
    "Speech2TextProcessor": "s2t_jax.frontend.processor",
    "BatchFeature": "s2t_jax.frontend.model_inputs",
    "BatchEncoding": "s2t_jax.frontend.model_inputs",
    "load_audio": "s2t_jax.frontend.audio",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 's2t_jax' has no attribute {name!r}")
