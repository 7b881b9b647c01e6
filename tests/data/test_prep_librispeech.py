"""prep_librispeech on a tiny LibriSpeech-layout folder: manifests, zip, vocabulary, config."""

import os

import numpy as np
import pytest
import sentencepiece
import soundfile

from s2t_jax.data.data_config import DataConfig
from s2t_jax.data.manifest import read_manifest
from s2t_jax.data.prep.librispeech import prepare
from s2t_jax.frontend.audio_entry import load_features_or_waveform
from s2t_jax.frontend.fbank import kaldi_fbank
from tests.data.helpers import first_batch

WORDS = "the cat sat on a mat while dogs ran far away from home".split()


def make_librispeech(root, rng):
    for split, speakers in (("train-clean-100", (19, 26)), ("dev-clean", (84,))):
        for spk in speakers:
            folder = os.path.join(root, split, str(spk), "198")
            os.makedirs(folder)
            lines = []
            for u in range(4):
                uid = f"{spk}-198-{u:04d}"
                n = int(rng.integers(4000, 12000))
                soundfile.write(
                    os.path.join(folder, f"{uid}.flac"),
                    (0.1 * rng.normal(size=n)).astype(np.float32),
                    16000,
                )
                lines.append(f"{uid} {' '.join(rng.choice(WORDS, 5)).upper()}\n")
            with open(os.path.join(folder, f"{spk}-198.trans.txt"), "w") as f:
                f.writelines(lines)


@pytest.mark.parametrize("features,vocab_type", [("zip", "unigram"), ("audio", "char")])
def test_prepare_writes_fairseq_layout(tmp_path, features, vocab_type):
    rng = np.random.default_rng(0)
    src, out = str(tmp_path / "LibriSpeech"), str(tmp_path / "out")
    make_librispeech(src, rng)
    splits = prepare(src, out, vocab_type=vocab_type, vocab_size=30, features=features)
    assert splits == ["train-clean-100", "dev-clean"]
    rows = read_manifest(os.path.join(out, "train-clean-100.tsv"))
    assert len(rows) == 8 and rows[0].id == "19-198-0000" and rows[0].tgt_text.islower()
    # the stored features are the fbank of the flac, and n_frames their count
    flac = os.path.join(src, "train-clean-100", "19", "198", "19-198-0000.flac")
    want = kaldi_fbank([soundfile.read(flac, dtype="float32")[0]], 16000, 80)[0]
    kind, got = load_features_or_waveform(rows[0].audio, out)
    if kind == "waveform":
        got = kaldi_fbank([got], 16000, 80)[0]
    else:
        assert ".zip:" in rows[0].audio and not os.path.isabs(rows[0].audio)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert rows[0].n_frames == len(want)
    # vocabulary: fairseq's special ids in spm, dictionary indices equal to spm ids
    prefix = "spm_char" if vocab_type == "char" else "spm_unigram30"
    spm = sentencepiece.SentencePieceProcessor(model_file=os.path.join(out, f"{prefix}.model"))
    assert [spm.id_to_piece(i) for i in range(4)] == ["<s>", "<pad>", "</s>", "<unk>"]
    data = DataConfig.load(out)
    enc = data.target_encoder()
    assert enc.vocab_size == spm.get_piece_size()
    text = rows[1].tgt_text
    assert enc.encode(text)[:-1].tolist() == spm.encode(text)
    assert enc.decode(enc.encode(text)) == text
    assert data.specaugment("train-clean-100", True).freq_mask_n == 2  # policy "ld"
    # and the loader reads it
    batch = first_batch(
        data, "dev-clean", 3000, 1024, frame_buckets=(128,), max_tokens=512, num_shards=1
    )
    assert batch["features"].shape == (4, 128, 80) and batch["bad"].sum() == 0
