"""The demo corpus's long-form test set: its test utterances joined into 30-120 s recordings.

Each recording is 10-20 consecutive test utterances (as rendered: voices, noise and all) with
0.2-1.5 s pauses of background noise between them, so it has what segmentation must find:
pauses of every length, speakers changing, no marks between sentences. The ground truth is
written beside it: the full reference text, each utterance's span, and each word's start and
end as eSpeak NG reported them while speaking (its word events; a word ends where the next
one starts, the last where the voice stops).

    longform.tsv         id, audio, n_frames, tgt_text (the whole recording's text), speaker
    longform/<id>.wav    16 kHz PCM
    longform_words.json  {id: {"utterances": [{id, start, end, text}],
                               "words": [{word, start, end}]}}

The same set made from the dev split (`longform_dev.tsv`, `longform_dev/`,
`longform_dev_words.json`; `python -m s2t_jax.data.prep.long_form --corpus DIR --split dev`)
is where segmenter settings and timestamp corrections are chosen, so that the test set's
answers never tune them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile

from s2t_jax.data.prep.espeak import synthesize_with_words
from s2t_jax.frontend.fbank import num_frames

GROUP = (10, 20)  # utterances per recording
PAUSE_S = (0.2, 1.5)
SAMPLE_RATE = 16_000


def _voice_end(wave: np.ndarray, rate: int) -> float:
    """Seconds until eSpeak's output falls silent for good (its trailing silence cut)."""
    loud = np.flatnonzero(np.abs(wave.astype(np.int32)) > 300)
    return (loud[-1] + 1) / rate if len(loud) else 0.0


def word_times(u) -> list[dict]:
    """A planned utterance's words with start and end seconds in its rendered file.

    eSpeak reports no event for some unstressed words ("in the library" has events for "in"
    and "library" only); such a word is spoken between its neighbours' events, so the time
    from the previous event to the next is shared among the words in it, in proportion to
    their letters.
    """
    wave, rate, events = synthesize_with_words(u.text, u.voice, u.rate, u.pitch, u.seed)
    tokens = u.text.split()
    event_at, next_token = {}, 0
    for word, start in events:  # in spoken order: each names the next token equal to it
        for k in range(next_token, len(tokens)):
            if tokens[k] == word:
                event_at[k], next_token = start, k + 1
                break
    starts = [event_at.get(k) for k in range(len(tokens))]
    voice_end = _voice_end(wave, rate)
    if starts[0] is None:
        starts[0] = 0.0
    # Group each word without an event with the word before it that has one.
    groups = []
    for k in range(len(tokens)):
        if starts[k] is not None or not groups:
            groups.append([k])
        else:
            groups[-1].append(k)
    out = []
    for g, group in enumerate(groups):
        begin = next(starts[k] for k in group if starts[k] is not None)
        end = starts[groups[g + 1][0]] if g + 1 < len(groups) else max(voice_end, begin)
        letters = np.cumsum([0] + [len(tokens[k]) for k in group]) / sum(
            len(tokens[k]) for k in group
        )
        for k, a, b in zip(group, letters[:-1], letters[1:]):
            out.append(
                {
                    "word": tokens[k],
                    "start": u.lead_s + begin + a * (end - begin),
                    "end": u.lead_s + begin + b * (end - begin),
                }
            )
    return out


def build_long_form(
    out_dir: str | Path, test_plan, seed: int, log=print, name: str = "longform"
) -> dict:
    """Writes the long-form set `name` from the rendered utterances of `test_plan` (the demo
    corpus's Utterance records, in order); returns {id: seconds}. The test set keeps the name
    "longform" and its seed stream; any other name draws its own pauses."""
    if not name.isidentifier():
        raise ValueError(f"name={name!r}: must be a plain identifier (it names files)")
    out = Path(out_dir)
    (out / name).mkdir(exist_ok=True)
    stream = [seed, 17] if name == "longform" else [seed, 17, sum(name.encode())]
    rng = np.random.default_rng(stream)
    truth, rows, seconds = {}, [], {}
    start = 0
    while start < len(test_plan):
        size = int(rng.integers(GROUP[0], GROUP[1] + 1))
        group = test_plan[start : start + size]
        start += size
        if len(group) < GROUP[0] // 2 and rows:  # a short tail joins no recording
            break
        rec_id = f"{name}-{len(rows):03d}"
        pieces, utterances, words, at = [], [], [], 0  # `at`: samples so far
        for i, u in enumerate(group):
            wave, rate = soundfile.read(out / u.audio, dtype="int16")
            if rate != SAMPLE_RATE:
                raise ValueError(f"{u.audio}: {rate} Hz, expected {SAMPLE_RATE}")
            if i:  # a pause of the next utterance's own background noise
                noise_std = float(np.std(wave[: int(0.04 * SAMPLE_RATE)].astype(np.float64)))
                n = int(rng.uniform(*PAUSE_S) * SAMPLE_RATE)
                pause = np.round(rng.standard_normal(n) * noise_std)
                pieces.append(np.clip(pause, -32768, 32767).astype(np.int16))
                at += n
            t = at / SAMPLE_RATE  # times to the microsecond: exact sample positions
            utterances.append(
                {
                    "id": u.uid,
                    "start": round(t, 6),
                    "end": round(t + len(wave) / rate, 6),
                    "text": u.text,
                }
            )
            words += [
                {
                    "word": w["word"],
                    "start": round(t + w["start"], 6),
                    "end": round(t + w["end"], 6),
                }
                for w in word_times(u)
            ]
            pieces.append(wave)
            at += len(wave)
        audio = np.concatenate(pieces)
        path = f"{name}/{rec_id}.wav"
        soundfile.write(out / path, audio, SAMPLE_RATE, subtype="PCM_16")
        text = " ".join(u.text for u in group)
        rows.append(f"{rec_id}\t{path}\t{num_frames(len(audio), SAMPLE_RATE)}\t{text}\tmixed\n")
        truth[rec_id] = {"utterances": utterances, "words": words}
        seconds[rec_id] = round(len(audio) / SAMPLE_RATE, 2)
    (out / f"{name}.tsv").write_text("id\taudio\tn_frames\ttgt_text\tspeaker\n" + "".join(rows))
    (out / f"{name}_words.json").write_text(json.dumps(truth, indent=1) + "\n")
    log(f"{out}: {len(rows)} long-form recordings, {sum(seconds.values()) / 60:.1f} min")
    return seconds


def corpus_plan(corpus_dir: str | Path, split: str) -> list:
    """The Utterance records of one split of an existing demo corpus, drawn again from the
    parameters its corpus.json records (the plan is a pure function of them), and checked
    against the split's manifest so that a changed generator fails loudly, not silently."""
    from s2t_jax.data.manifest import read_manifest
    from s2t_jax.data.prep import demo_corpus
    from s2t_jax.data.prep.sentences import make_sentences

    corpus = Path(corpus_dir)
    if split not in demo_corpus.SPLITS:
        raise ValueError(f"split={split!r}: expected one of {demo_corpus.SPLITS}")
    params = json.loads((corpus / "corpus.json").read_text())["params"]
    text_seed, synth_seed = np.random.SeedSequence(params["seed"]).spawn(2)
    counts = {s: params[f"num_{s}"] for s in demo_corpus.SPLITS}
    pool = make_sentences(sum(counts.values()), text_seed)
    sentences, first = {}, 0
    for s in demo_corpus.SPLITS:
        sentences[s] = pool[first : first + counts[s]]
        first += counts[s]
    plan = demo_corpus._plan(sentences, np.random.default_rng(synth_seed), params["audio_format"])
    plan = [u for u in plan if u.uid.startswith(f"{split}-")]
    listed = {r.id: r.tgt_text for r in read_manifest(corpus / f"{split}.tsv")}
    if [(u.uid, u.text) for u in plan] != list(listed.items()):
        raise ValueError(f"{corpus}: the {split} plan drawn again does not match {split}.tsv")
    return plan


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True, help="a demo corpus directory")
    parser.add_argument("--split", default="dev", choices=("dev", "test"))
    args = parser.parse_args(argv)
    seed = json.loads((Path(args.corpus) / "corpus.json").read_text())["params"]["seed"]
    name = "longform" if args.split == "test" else f"longform_{args.split}"
    build_long_form(args.corpus, corpus_plan(args.corpus, args.split), seed, name=name)


if __name__ == "__main__":
    main()
