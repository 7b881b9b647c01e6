"""Builds a tiny fairseq `transformer_lm` with fairseq itself and saves the reference fixture.

Run under a Python with fairseq 0.12.2 installed (see tests/assets/fairseq/README.md for the
virtual environment), from the repository root:

    /work/fairseq-venv/bin/python tools/make_fairseq_lm_fixture.py

Writes tests/assets/fairseq/transformer_lm_{untied,tied}.pt (checkpoints in the layout fairseq's
trainer saves: `cfg` with the model config, `model` with the state dict) and .npz files with
fixed input ids and fairseq's own next-token log-probabilities for them, in eval mode. Our LM
loader is tested against these (tests/checkpoints/test_fairseq_lm.py).
"""

import argparse
import os

import numpy as np
import torch
from fairseq.data import Dictionary
from fairseq.models.transformer_lm import TransformerLanguageModel, base_lm_architecture

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "assets", "fairseq")
VOCAB = 20


def build(final_norm: bool, shared: bool, seed: int):
    torch.manual_seed(seed)
    dictionary = Dictionary()
    for i in range(VOCAB - 4):
        dictionary.add_symbol(f"w{i}")
    args = argparse.Namespace(
        arch="transformer_lm",
        decoder_embed_dim=16,
        decoder_output_dim=16,
        decoder_input_dim=16,
        decoder_ffn_embed_dim=24,
        decoder_layers=2,
        decoder_attention_heads=2,
        no_decoder_final_norm=not final_norm,
        share_decoder_input_output_embed=shared,
        activation_fn="gelu" if shared else "relu",
        tokens_per_sample=64,
        max_target_positions=64,
        dropout=0.0,
    )
    base_lm_architecture(args)

    class Task:
        source_dictionary = target_dictionary = dictionary

    model = TransformerLanguageModel.build_model(args, Task())
    with torch.no_grad():  # random layer norms, so a swapped scale or bias shows
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    model.eval()
    return model, args, dictionary


def main():
    os.makedirs(OUT, exist_ok=True)
    ids = torch.tensor([[2, 5, 9, 7, 4, 11, 6, 2], [2, 8, 8, 3, 1, 1, 1, 1]])  # pad = 1
    # fairseq's transformer_lm is always pre-norm (base_lm_architecture forces it); the
    # variants differ in tying, activation and the final layer norm.
    for name, final_norm, shared in (("untied", True, False), ("tied", False, True)):
        model, args, dictionary = build(final_norm, shared, seed=len(name))
        with torch.no_grad():
            logits, _ = model(ids)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
        state = {
            "args": args,
            "model": model.state_dict(),
            "optimizer_history": [],
            "extra_state": {},
        }
        torch.save(state, os.path.join(OUT, f"transformer_lm_{name}.pt"))
        np.savez(
            os.path.join(OUT, f"transformer_lm_{name}.npz"),
            ids=ids.numpy(),
            log_probs=log_probs.numpy(),
            vocab=len(dictionary),
        )
        print(name, "written:", sorted(model.state_dict())[:6], "...")


if __name__ == "__main__":
    main()
