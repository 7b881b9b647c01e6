"""The transcribe CLI: windows for long audio, bad files skipped, --tgt_lang as forced BOS."""

import json

import numpy as np
import pytest
import soundfile
import soxr

from s2t_jax import Speech2TextForConditionalGeneration
from s2t_jax.decoding.transcribe import split_at_pauses, split_windows, window_samples
from s2t_jax.frontend.extractor import Speech2TextFeatureExtractor
from s2t_jax.frontend.processor import Speech2TextProcessor
from s2t_jax.frontend.tokenizer import MUSTC_LANGS, Speech2TextTokenizer
from s2t_jax.transcribe import main
from tests.decoding.conftest import AUDIO_DIRS, AUDIO_NAME
from tests.hf_models import SHAPES, make_hf_model

WORDS = "mister quilter is the apostle of the middle classes and we are glad to welcome his gospel"


def _tokenizer_files(directory):
    import sentencepiece as spm

    corpus = directory / "corpus.txt"
    words = WORDS.split()
    lines = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4
    corpus.write_text("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "sentencepiece.bpe"),
        model_type="unigram",
        vocab_size=64,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        user_defined_symbols=[f"<lang:{lang}>" for lang in MUSTC_LANGS],
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_file=str(directory / "sentencepiece.bpe.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    for name in ("corpus.txt", "sentencepiece.bpe.vocab"):
        (directory / name).unlink()
    tokenizer = Speech2TextTokenizer(
        directory / "vocab.json", directory / "sentencepiece.bpe.model", lang_codes="mustc"
    )
    tokenizer.save_pretrained(directory)
    Speech2TextFeatureExtractor().save_pretrained(directory)
    return len(vocab)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny multilingual-style model whose encoder reaches 25 positions = 100 frames (~1 s).

    zero_padded_frames makes outputs independent of the batch's padding, so windows decoded
    in one batch can be checked one at a time.
    """
    directory = tmp_path_factory.mktemp("transcribe_model")
    vocab_size = _tokenizer_files(directory)
    hf = make_hf_model(seed=2, decisive=True, **dict(SHAPES["wide_untied"], vocab_size=vocab_size))
    hf.config.max_source_positions = 25
    hf.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config.update(zero_padded_frames=True, max_length=12)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio")
    source = next(d / AUDIO_NAME for d in AUDIO_DIRS if (d / AUDIO_NAME).is_file())
    wave, rate = soundfile.read(source, dtype="float32")
    short = folder / "short_24k_stereo.wav"  # 0.8 s, another rate and 2 channels: one window
    clip = soxr.resample(wave[: int(0.8 * rate)], rate, 24000)
    soundfile.write(short, np.stack([clip, 0.5 * clip], axis=1), 24000)
    bad = folder / "not_audio.wav"
    bad.write_text("this is not a wav file")
    return {"long": source, "short": short, "bad": bad, "missing": folder / "missing.flac"}


def _decode_alone(model_dir, waves, **kwargs):
    """Each window on its own (batch of one): the reference for windowed, batched decoding."""
    model = Speech2TextForConditionalGeneration.from_pretrained(model_dir)
    processor = Speech2TextProcessor.from_pretrained(model_dir)
    texts = []
    for wave in waves:
        inputs = processor.feature_extractor(wave, sampling_rate=16000, return_tensors="np")
        ids = model.generate(inputs["input_features"], inputs["attention_mask"], **kwargs)
        texts.append(processor.batch_decode(ids, skip_special_tokens=True)[0].strip())
    return " ".join(t for t in texts if t)


def test_long_audio_is_windowed_batched_and_joined(model_dir, audio_files, capsys):
    files = [audio_files[k] for k in ("long", "bad", "short", "missing")]
    args = ["--model", str(model_dir), "--batch_size", "4", "--segmenter", "fixed"]
    code = main([*args, *map(str, files)])
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(files[0]), str(files[2])]
    assert str(files[1]) in err and str(files[3]) in err and err.count("skipped") == 2

    from s2t_jax.frontend.audio import load_audio

    config = Speech2TextForConditionalGeneration.from_pretrained(model_dir).config
    length, step = window_samples(config, 16000)
    assert length == (100 - 1) * 160 + 400
    wave = load_audio(files[0], 16000)
    windows = [piece for _, piece in split_windows(wave, length, step, 400)]
    assert len(windows) == 6  # 5.86 s in windows of 1 s
    assert lines[0].split("\t")[1] == _decode_alone(model_dir, windows)
    assert len(lines[0].split("\t")[1].split()) > 5  # not vacuous


def test_tgt_lang_forces_the_language_tag(model_dir, audio_files, capsys):
    code = main(["--model", str(model_dir), "--tgt_lang", "fr", str(audio_files["short"])])
    out, _ = capsys.readouterr()
    assert code == 0
    from s2t_jax.frontend.audio import load_audio

    wave = load_audio(audio_files["short"], 16000)
    lang_id = Speech2TextProcessor.from_pretrained(model_dir).tokenizer.lang_code_to_id["fr"]
    expected = _decode_alone(model_dir, [wave], forced_bos_token_id=lang_id)
    assert out.split("\t")[1].strip() == expected
    assert expected != _decode_alone(model_dir, [wave])  # the tag changed the output


def test_all_files_failing_exits_nonzero(model_dir, audio_files, capsys):
    code = main(["--model", str(model_dir), str(audio_files["bad"]), str(audio_files["missing"])])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and err.count("skipped") == 2
    assert main(["--model", str(model_dir), "--tgt_lang", "xx", str(audio_files["short"])]) == 2
    missing = str(audio_files["missing"].parent / "no_model")
    assert main(["--model", missing, str(audio_files["short"])]) == 2
    assert "no_model" in capsys.readouterr().err


def test_split_windows_edges():
    wave = np.arange(1100, dtype=np.float32)
    assert [len(p) for _, p in split_windows(wave, 400, 300, 40)] == [400, 400, 400, 200]
    assert [len(p) for _, p in split_windows(wave, 400, 300, 250)] == [400, 400, 400]
    assert [len(p) for _, p in split_windows(wave[:1000], 400, 300, 40)] == [400, 400, 400]
    assert [s for s, _ in split_windows(wave[:1000], 400, 300, 40)] == [0, 300, 600]
    assert [len(p) for _, p in split_windows(wave[:30], 400, 300, 40)] == [30]


def test_pause_segments_are_decoded_and_joined(model_dir, audio_files, capsys):
    """The default segmenter: cuts in pauses, each segment within the encoder's reach; the
    output equals each segment decoded on its own, joined."""
    from s2t_jax.frontend.audio import load_audio

    assert main(["--model", str(model_dir), "--batch_size", "4", str(audio_files["long"])]) == 0
    out = capsys.readouterr().out
    config = Speech2TextForConditionalGeneration.from_pretrained(model_dir).config
    length, _ = window_samples(config, 16000)
    wave = load_audio(audio_files["long"], 16000)
    pieces = split_at_pauses(wave, 16000, length)
    assert len(pieces) >= 6 and all(len(p) <= length for _, p in pieces)
    starts = [s for s, _ in pieces]
    assert starts == sorted(starts)
    assert out.split("\t")[1].strip() == _decode_alone(model_dir, [p for _, p in pieces])


def test_json_srt_and_word_times_from_a_ctc_head(model_dir, audio_files, tmp_path, capsys):
    model = Speech2TextForConditionalGeneration.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    d, v = model.config.d_model, model.config.vocab_size
    model.ctc_head = {
        "kernel": rng.normal(size=(d, v)).astype(np.float32),
        "bias": np.zeros(v, np.float32),
    }
    model.save_pretrained(tmp_path / "ours")  # our format keeps the head and processor files
    long = str(audio_files["long"])
    args = ["--model", str(tmp_path / "ours"), "--format", "json", "--max_length", "6"]
    assert main([*args, long]) == 0  # short texts: a 1 s segment (25 frames) can align them
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["audio"] == long and record["word_times"] == "ctc"
    aligned = [s for s in record["segments"] if s.get("words")]
    assert aligned, record
    for s in aligned:
        assert [w["word"] for w in s["words"]] == s["text"].split()
        times = [t for w in s["words"] for t in (w["start"], w["end"])]
        assert times == sorted(times)
        assert s["start"] - 1e-3 <= times[0] and times[-1] <= s["end"] + 0.05
    assert main(["--model", str(model_dir), "--format", "srt", long]) == 2  # needs --output_dir
    code = main(["--model", str(model_dir), "--format", "srt", "--output_dir", str(tmp_path), long])
    assert code == 0
    srt = (tmp_path / f"{audio_files['long'].stem}.srt").read_text()
    assert srt.startswith("1\n00:00:") and " --> " in srt


def test_long_form_evaluation_scores_whole_recordings(model_dir, audio_files, tmp_path, capsys):
    """eval --long_form's library call: the hypothesis of a recording is transcribe's joined
    segments, and WER is over the whole recording."""
    import jiwer

    from s2t_jax.evaluation.long_form import evaluate_long_form

    manifest = tmp_path / "long.tsv"
    manifest.write_text(
        "id\taudio\tn_frames\ttgt_text\tspeaker\n"
        f"rec\t{audio_files['long']}\t586\t{WORDS}\tx\n"
        f"gone\t{tmp_path / 'missing.wav'}\t10\tnothing\tx\n"
    )
    model = Speech2TextForConditionalGeneration.from_pretrained(model_dir)
    processor = Speech2TextProcessor.from_pretrained(model_dir)
    results = evaluate_long_form(model, processor, str(manifest), str(tmp_path / "out"))
    assert results["recordings"] == {"manifest": 2, "scored": 1, "skipped": 1}
    record = json.loads((tmp_path / "out" / "hypotheses.jsonl").read_text().splitlines()[0])
    assert main(["--model", str(model_dir), str(audio_files["long"])]) == 0
    assert record["hypothesis"] == capsys.readouterr().out.split("\t")[1].strip()
    assert results["metrics"]["wer"] == pytest.approx(100 * jiwer.wer(WORDS, record["hypothesis"]))


def test_word_time_errors_use_the_wer_alignment():
    from s2t_jax.evaluation.long_form import word_time_errors

    ref = [{"word": w, "start": float(i), "end": i + 0.5} for i, w in enumerate("a b c d".split())]
    hyp = [
        {"word": "a", "start": 0.1, "end": 0.5},
        {"word": "x", "start": 1.0, "end": 1.5},  # substituted: not matched
        {"word": "c", "start": 2.0, "end": 2.9},
        {"word": "d", "start": 3.2, "end": 3.5},
    ]
    errors = word_time_errors(ref, hyp)
    assert errors["matched"] == 3
    assert errors["start"] == pytest.approx([0.1, 0.0, 0.2])
    assert errors["end"] == pytest.approx([0.0, 0.4, 0.0])


def test_segmenter_options_are_checked_by_name():
    """Options reach the segmenter's config; a misspelt one, or one for another detector, is
    refused by name before any audio is read."""
    from s2t_jax.decoding.transcribe import transcribe_segments

    wave = np.zeros(16000, np.float32)
    with pytest.raises(ValueError, match="margin_secs"):
        split_at_pauses(wave, 16000, 16000 * 20, options={"margin_secs": 0.1})
    with pytest.raises(ValueError, match="aggressiveness"):
        split_at_pauses(wave, 16000, 16000 * 20, options={"aggressiveness": 3})
    with pytest.raises(ValueError, match="margin_seconds"):
        split_at_pauses(wave, 16000, 16000 * 20, options={"margin_seconds": -1})
    with pytest.raises(ValueError, match="segmenter_options"):
        transcribe_segments(None, None, [], segmenter="fixed", segmenter_options={"a": 1})
    with pytest.raises(ValueError, match="segmenter='vad'"):
        transcribe_segments(None, None, [], segmenter="vad")
