"""A made-up fairseq-layout corpus where the target is a function of the features.

Each of 8 words has a fixed 16-dim feature pattern; an utterance of K words is K blocks of 8
frames showing the word's pattern plus noise, and its transcript is the words in order. A model
that learns to read the blocks in order drives the loss towards 0. Train features are packed in
a zip as fairseq's prep does (`fbank.zip:offset:length`), dev features are plain .npy files.
"""

import os

import numpy as np

from s2t_jax.data.manifest import Utterance, create_zip, write_manifest, zip_manifest

WORDS = [f"w{i}" for i in range(8)]
FEATS = 16
FRAMES_PER_WORD = 8


def write_corpus(root, num_train=256, num_dev=32, seed=0, lengths=(2, 3, 4), yaml_extra=""):
    """Writes train.tsv, dev.tsv, dict.txt, config.yaml under `root`; returns root."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    patterns = rng.normal(size=(len(WORDS), FEATS)).astype(np.float32) * 2
    feats_dir = os.path.join(root, "feats")
    os.makedirs(feats_dir, exist_ok=True)

    def make(split, n):
        rows = []
        for i in range(n):
            k = int(rng.choice(lengths))
            words = rng.integers(0, len(WORDS), size=k)
            x = np.repeat(patterns[words], FRAMES_PER_WORD, axis=0)  # [8k, F]
            x = x + 0.3 * rng.normal(size=x.shape).astype(np.float32)
            uid = f"{split}-{i}"
            np.save(os.path.join(feats_dir, f"{uid}.npy"), x.astype(np.float32))
            rows.append((uid, " ".join(WORDS[w] for w in words), len(x)))
        return rows

    train, dev = make("train", num_train), make("dev", num_dev)
    zip_path = os.path.join(root, "fbank.zip")
    create_zip(zip_path, [os.path.join(feats_dir, f"{u}.npy") for u, _, _ in train])
    members = zip_manifest(zip_path)
    write_manifest(
        os.path.join(root, "train.tsv"),
        [Utterance(u, members[u][0], n, text, speaker="spk") for u, text, n in train],
    )
    write_manifest(
        os.path.join(root, "dev.tsv"),
        [Utterance(u, f"feats/{u}.npy", n, text, speaker="spk") for u, text, n in dev],
    )
    with open(os.path.join(root, "dict.txt"), "w") as f:
        f.writelines(f"{w} 1\n" for w in WORDS)
    with open(os.path.join(root, "config.yaml"), "w") as f:
        f.write(
            "vocab_filename: dict.txt\n"
            f"input_feat_per_channel: {FEATS}\n"
            "input_channels: 1\n"
            "transforms:\n"
            "  '*': [utterance_cmvn]\n" + yaml_extra
        )
    return root
