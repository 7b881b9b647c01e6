"""Any Speech2Text checkpoint -> one of our model directories or a transformers directory.

The formats themselves live beside this: checkpoints/hf.py (transformers), fairseq.py (fairseq
`.pt`), model_dir.py (reading and writing model directories), export.py (a training workdir).
"""

import os

from s2t_jax.checkpoints.export import export_workdir
from s2t_jax.checkpoints.model_dir import load_model_dir, save_model_dir
from s2t_jax.checkpoints.workdir import is_training_workdir


def convert_checkpoint(src: str, dst: str, to: str = "s2t_jax") -> None:
    """Any source (transformers dir, ours, fairseq .pt, training workdir) -> ours or transformers.

    Tokenizer and feature-extractor files next to the source are copied along.
    """
    if to not in ("s2t_jax", "transformers"):
        raise ValueError(f"--to must be 's2t_jax' or 'transformers', got {to!r}")
    if os.path.isdir(src) and is_training_workdir(src):
        export_workdir(src, dst, transformers_format=(to == "transformers"))
        return
    config, params, extras = load_model_dir(src, with_extras=True)
    source_dir = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    save_model_dir(dst, config, params, to == "transformers", source_dir, **extras)
