"""Any Speech2Text checkpoint -> one of our model directories or a transformers directory.

The formats themselves live beside this: checkpoints/hf.py (transformers), fairseq.py (fairseq
`.pt`), export.py (a training workdir), and the model classes read and write them.
"""

import os

from s2t_jax.checkpoints.export import export_workdir
from s2t_jax.checkpoints.workdir import is_training_workdir


def convert_checkpoint(src: str, dst: str, to: str = "s2t_jax") -> None:
    """Any source (transformers dir, ours, fairseq .pt, training workdir) -> ours or transformers.

    Tokenizer and feature-extractor files next to the source are copied along.
    """
    from s2t_jax.modeling import Speech2TextForConditionalGeneration

    if to not in ("s2t_jax", "transformers"):
        raise ValueError(f"--to must be 's2t_jax' or 'transformers', got {to!r}")
    if os.path.isdir(src) and is_training_workdir(src):
        export_workdir(src, dst, transformers_format=(to == "transformers"))
        return
    model = Speech2TextForConditionalGeneration.from_pretrained(src)
    if model.source_dir is None and os.path.isfile(src):
        model.source_dir = os.path.dirname(os.path.abspath(src))
    model.save_pretrained(dst, transformers_format=(to == "transformers"))
