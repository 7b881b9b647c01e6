"""Writes tests/assets/fairseq/: tiny S2T models built, saved and run by fairseq itself.

Run it with a Python that has fairseq 0.12.2 and torch 2.1 (not the project's venv; see
tests/assets/fairseq/README.md for how that environment is made):

    /work/fairseq-venv/bin/python tools/make_fairseq_fixtures.py [--out tests/assets/fairseq]

Why fairseq itself and not a copy of its layers: the loader and the Conformer encoder are
checked against what fairseq's own code computes and writes. Each model comes from fairseq's
option parser and architecture functions, its task (a two-file data dir: config.yaml and
dict.txt) and its model builder; the checkpoint is written in the layout fairseq writes:

* "cfg" (Trainer.state_dict, fairseq >= 0.10): `cfg` a dict whose `model` is an argparse
  Namespace, as `OmegaConf.to_container` leaves it;
* "cfg_omegaconf" (what `checkpoint_utils.load_checkpoint_to_cpu` hands back and
  scripts/average_checkpoints.py saves again, so every averaged release has it): `cfg` an
  omegaconf DictConfig pickled with its node objects;
* "args" (fairseq < 0.10): `args` an argparse Namespace, no `cfg`.

Beside each `NAME.pt`, `NAME.npz` holds fixed inputs and fairseq's outputs in eval mode:
features [2, frames, 80] (the second row shorter and zero-padded, as fairseq's collater pads),
lengths, prev_output_tokens, encoder_out [batch, sub_frames, d_model], encoder_valid
[batch, sub_frames] and logits [batch, tgt, vocab]; `ctc_logits` where the model has a CTC head;
`num_params` (fairseq's count); for one conformer, `train_*` arrays from a train-mode step on
an unpadded batch (batch-norm batch statistics and the running statistics it leaves).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile

import numpy as np
import torch
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

VOCAB = 12  # symbols besides fairseq's four specials
FRAMES = 37
LENGTHS = (37, 22)
TGT = 5

# name -> (command-line flags, checkpoint layout, extra args set on the Namespace)
CONFORMER = [
    "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "32", "--encoder-layers", "2",
    "--encoder-attention-heads", "4", "--decoder-layers", "1", "--decoder-ffn-embed-dim", "32",
    "--decoder-attention-heads", "2", "--conv-channels", "8", "--conv-kernel-sizes", "5,5",
]  # fmt: skip
TRANSFORMER = [
    "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "32", "--encoder-layers", "2",
    "--encoder-attention-heads", "4", "--decoder-layers", "1", "--decoder-ffn-embed-dim", "32",
    "--decoder-attention-heads", "4", "--conv-channels", "8",
]  # fmt: skip
VARIANTS = {
    "conformer_abs": (
        ["--arch", "s2t_conformer", "--attn-type", "espnet", "--pos-enc-type", "abs",
         "--depthwise-conv-kernel-size", "7", *CONFORMER],
        "cfg",
        {},
    ),
    "conformer_rope": (
        ["--arch", "s2t_conformer", "--attn-type", "espnet", "--pos-enc-type", "rope",
         "--depthwise-conv-kernel-size", "31", *CONFORMER],
        "cfg",
        {},
    ),
    "conformer_rel_pos": (
        ["--arch", "s2t_conformer", "--attn-type", "espnet", "--pos-enc-type", "rel_pos",
         "--depthwise-conv-kernel-size", "15", "--share-decoder-input-output-embed",
         *CONFORMER],
        "cfg_omegaconf",
        {},
    ),
    "conformer_fairseq_mha": (  # --attn-type left out: fairseq's own MultiheadAttention
        ["--arch", "s2t_conformer", "--depthwise-conv-kernel-size", "5", *CONFORMER],
        "args",
        {},
    ),
    "transformer_tied_conv3_gelu": (
        ["--arch", "s2t_transformer", "--conv-kernel-sizes", "3,5,3", "--activation-fn", "gelu",
         "--share-decoder-input-output-embed", *TRANSFORMER],
        "cfg_omegaconf",
        {},
    ),
    "transformer_untied_ctc": (
        ["--arch", "s2t_transformer", "--conv-kernel-sizes", "3",
         "--activation-fn", "gelu_accurate", "--no-scale-embedding", *TRANSFORMER],
        "args",
        {"ctc_weight": 0.3},  # a CTC criterion's flag; the encoder reads it to add ctc_proj
    ),
    "transformer_layernorm_embedding": (
        ["--arch", "s2t_transformer", "--conv-kernel-sizes", "3,3", "--layernorm-embedding",
         *TRANSFORMER],
        "cfg",
        {},
    ),
}  # fmt: skip


# fairseq 0.12's Transformer layers keep fused copies of their weights for PyTorch's
# BetterTransformer path; fairseq rebuilds them from the separate weights when it loads.
_FUSED = re.compile(r"\.(in_proj|out_proj|fc1|fc2)_(weight|bias)$")


def _data_dir(root: str) -> str:
    with open(os.path.join(root, "config.yaml"), "w") as f:
        f.write("vocab_filename: dict.txt\ninput_feat_per_channel: 80\ninput_channels: 1\n")
    with open(os.path.join(root, "dict.txt"), "w") as f:
        for i in range(VOCAB):
            f.write(f"tok{i} {100 - i}\n")
    return root


def _parse(data: str, flags: list[str]) -> argparse.Namespace:
    """The full Namespace fairseq-train would make: common, task, model and dataset options."""
    parser = options.get_training_parser()
    common = [data, "--task", "speech_to_text", "--cpu", "--dropout", "0.0", "--seed", "1"]
    args = options.parse_args_and_arch(parser, input_args=common + flags)
    # fairseq 0.12.2's s2t_conformer declares these flags without a type, so a value given on
    # the command line arrives as a string that its layers cannot use.
    for key in ("depthwise_conv_kernel_size", "input_feat_per_channel", "input_channels"):
        if isinstance(getattr(args, key, None), str):
            setattr(args, key, int(getattr(args, key)))
    return args


def _perturb(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Moves every weight off its init (LayerNorm ones, zero biases, unit batch-norm stats),
    so a tensor the loader misplaces or drops changes the outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if _FUSED.search(name):
                continue  # BetterTransformer copies: left as training leaves them (zeros)
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
            if name.endswith("embed_tokens.weight"):
                p[1] = 0.0  # the pad row, as nn.Embedding(padding_idx=1) keeps it
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def _inputs(gen: torch.Generator):
    feats = torch.randn(len(LENGTHS), FRAMES, 80, generator=gen)
    for i, n in enumerate(LENGTHS):
        feats[i, n:] = 0.0  # the collater's zero padding
    lengths = torch.tensor(LENGTHS)
    tokens = torch.randint(4, 4 + VOCAB, (len(LENGTHS), TGT), generator=gen)
    tokens[:, 0] = 2  # eos starts prev_output_tokens in fairseq
    return feats, lengths, tokens


def _run(model, feats, lengths, tokens) -> dict[str, np.ndarray]:
    model.eval()
    with torch.no_grad():
        enc = model.encoder(src_tokens=feats, src_lengths=lengths)
        logits, _ = model.decoder(prev_output_tokens=tokens, encoder_out=enc)
        out = enc["encoder_out"][0]  # [sub_frames, batch, d_model]
        pad = enc["encoder_padding_mask"]
        valid = ~pad[0] if pad else torch.ones(out.shape[:2][::-1], dtype=torch.bool)
        arrays = {
            "encoder_out": out.transpose(0, 1).numpy(),
            "encoder_valid": valid.numpy(),
            "logits": logits.numpy(),
        }
        if getattr(model.encoder, "ctc_proj", None) is not None:
            arrays["ctc_logits"] = model.encoder.ctc_proj(out).transpose(0, 1).numpy()
    return arrays


def _train_step(model, gen) -> dict[str, np.ndarray]:
    """A train-mode encoder pass on an unpadded batch (dropout is 0): batch-norm normalises
    with batch statistics and updates its running ones."""
    feats = torch.randn(2, 29, 80, generator=gen)
    lengths = torch.tensor([29, 29])
    model.train()
    with torch.no_grad():
        out = model.encoder(src_tokens=feats, src_lengths=lengths)["encoder_out"][0]
    bn = model.encoder.conformer_layers[0].conv_module.batch_norm
    model.eval()
    return {
        "train_features": feats.numpy(),
        "train_encoder_out": out.transpose(0, 1).numpy(),
        "train_running_mean_0": bn.running_mean.numpy().copy(),
        "train_running_var_0": bn.running_var.numpy().copy(),
    }


def _save(path: str, layout: str, args, model) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer_history": [
            {"criterion_name": "LabelSmoothedCrossEntropyCriterion", "optimizer_name": "Adam",
             "lr_scheduler_state": {"best": None}, "num_updates": 0}
        ],
        "extra_state": {"epoch": 1, "previous_training_time": 0.0},
    }  # fmt: skip
    if layout == "args":
        state["args"] = args
    else:
        from omegaconf import OmegaConf

        cfg = convert_namespace_to_omegaconf(args)
        state.update(
            args=None,
            cfg=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            task_state={},
        )
    checkpoint_utils.torch_persistent_save(state, path)
    if layout == "cfg_omegaconf":
        # Read back the way fairseq does (cfg becomes a DictConfig) and saved again, as
        # scripts/average_checkpoints.py does with every checkpoint it averages.
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
        checkpoint_utils.torch_persistent_save(state, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/assets/fairseq")
    out_dir = parser.parse_args().out
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = _data_dir(tmp)
        for i, (name, (flags, layout, extra)) in enumerate(sorted(VARIANTS.items())):
            torch.manual_seed(i)
            args = _parse(data, flags)
            for key, value in extra.items():
                setattr(args, key, value)
            task = tasks.setup_task(args)
            model = task.build_model(args)
            gen = torch.Generator().manual_seed(100 + i)
            _perturb(model, gen)
            feats, lengths, tokens = _inputs(gen)
            arrays = {
                "features": feats.numpy(),
                "lengths": lengths.numpy(),
                "prev_output_tokens": tokens.numpy(),
                **_run(model, feats, lengths, tokens),
            }
            # fairseq's own parameter count, less the BetterTransformer copies (see _perturb).
            arrays["num_params"] = np.int64(
                sum(p.numel() for n, p in model.named_parameters() if not _FUSED.search(n))
            )
            _save(os.path.join(out_dir, f"{name}.pt"), layout, args, model)
            if name == "conformer_rel_pos":
                arrays.update(_train_step(model, gen))
            np.savez_compressed(os.path.join(out_dir, f"{name}.npz"), **arrays)
            print(f"{name}: {layout}, {arrays['num_params']} params")


if __name__ == "__main__":
    main()
