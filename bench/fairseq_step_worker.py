"""fairseq's own train step, driven one step at a time by bench/train_step.py.

Runs under a Python that has fairseq 0.12.2 (not the project's venv; tests/assets/fairseq/
README.md says how that environment is made), so it imports nothing from s2t_jax. Usage:

    python bench/fairseq_step_worker.py BATCH.npz -- <fairseq-train model flags>

It builds the model with fairseq's option parser, architecture functions and task, then reads
lines on stdin: "step" runs forward + label-smoothed cross entropy (fairseq's criterion
function) + backward + clip 10 + Adam on the batch of BATCH.npz and answers with the seconds it
took; "quit" ends. One step at a time, so the caller can alternate with its own steps and a
shared machine's changing load hits both alike.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from fairseq import options, tasks  # noqa: E402
from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss  # noqa: E402


def build(vocab: int, flags: list[str]):
    tmp = tempfile.mkdtemp()
    with open(os.path.join(tmp, "config.yaml"), "w") as f:
        f.write("vocab_filename: dict.txt\ninput_feat_per_channel: 80\ninput_channels: 1\n")
    with open(os.path.join(tmp, "dict.txt"), "w") as f:
        for i in range(vocab - 4):  # fairseq adds its four specials
            f.write(f"tok{i} 1\n")
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(
        parser, input_args=[tmp, "--task", "speech_to_text", "--cpu", "--seed", "1", *flags]
    )
    for key in ("depthwise_conv_kernel_size", "input_feat_per_channel", "input_channels"):
        if isinstance(getattr(args, key, None), str):  # declared without a type in 0.12.2
            setattr(args, key, int(getattr(args, key)))
    task = tasks.setup_task(args)
    return task.build_model(args).train()


def main():
    path, flags = sys.argv[1], sys.argv[sys.argv.index("--") + 1 :]
    data = np.load(path)
    vocab = int(data["vocab"])
    torch.manual_seed(0)
    model = build(vocab, flags)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    feats = torch.from_numpy(data["features"])
    lengths = torch.from_numpy(data["attention_mask"].sum(-1).astype(np.int64))
    prev = torch.from_numpy(data["prev_tokens"].astype(np.int64))
    target = torch.from_numpy(data["target"].astype(np.int64))
    params = sum(p.numel() for p in model.parameters())
    print(f"ready {params} {torch.get_num_threads()}", flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        start = time.perf_counter()
        logits, _ = model(src_tokens=feats, src_lengths=lengths, prev_output_tokens=prev)
        lprobs = torch.log_softmax(logits.float(), dim=-1).view(-1, logits.shape[-1])
        loss, _ = label_smoothed_nll_loss(lprobs, target.view(-1), 0.1, ignore_index=1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        print(f"{time.perf_counter() - start:.6f}", flush=True)


if __name__ == "__main__":
    main()
