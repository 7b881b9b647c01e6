"""Evaluate a checkpoint on a manifest: `python eval.py --checkpoint PATH --manifest TSV`.

PATH: one of our model dirs, a transformers dir, a fairseq .pt, or a training workdir (or its
checkpoints/<step>). The manifest is a fairseq TSV, or a plain list of audio paths (hypotheses
only). Writes hypotheses.tsv and results.json to --output_dir; rerun with the same
--output_dir to resume an interrupted run. See docs/evaluation.md.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from s2t_jax.decoding.buckets import DEFAULT_BUCKETS
from s2t_jax.decoding.transcribe import SEGMENTERS  # numpy only: JAX is not started here
from s2t_jax.parallel import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file[:arg]; its data.root/config_yaml is the data config."
)
flags.DEFINE_string("checkpoint", None, "Model dir, fairseq .pt, or training workdir.")
flags.DEFINE_string("manifest", None, "fairseq TSV manifest, or a list of audio paths.")
flags.DEFINE_string("output_dir", None, "Default: eval/<manifest name> in the current dir.")
flags.DEFINE_string("data_config", None, "fairseq config.yaml (spm, vocabulary, CMVN).")
flags.DEFINE_integer("num_beams", None, "Default: the checkpoint's generation settings.")
flags.DEFINE_integer("max_length", None, "Default: the checkpoint's (start token included).")
flags.DEFINE_integer("batch_size", 16, "Utterances per step over all devices.")
flags.DEFINE_list("buckets", [str(b) for b in DEFAULT_BUCKETS], "Padded frame lengths.")
flags.DEFINE_enum("task", "asr", ["asr", "st"], "Headline metric: WER (asr) or BLEU (st).")
flags.DEFINE_string("wer_tokenizer", "none", "sacrebleu tokenizer before WER: none, 13a, ...")
flags.DEFINE_bool("wer_lowercase", False, "Lower-case before WER.")
flags.DEFINE_bool("wer_remove_punctuation", False, "Drop punctuation tokens before WER.")
flags.DEFINE_bool("wer_char_level", False, "Character error rate instead of WER.")
flags.DEFINE_bool("char_bleu", False, "Character-level BLEU (zh, ja).")
flags.DEFINE_string(
    "tgt_lang",
    None,
    "Force this target language for every row (multilingual models); default: each row's "
    "tgt_lang column, mixed languages decoded together.",
)
flags.DEFINE_integer("num_devices", 0, "Devices to shard over; 0: all.")
flags.DEFINE_integer(
    "cpu_devices", 0, "On a CPU host, make this many XLA devices (one per core: -1); 0: JAX's."
)
flags.DEFINE_string("dtype", None, "Compute dtype: float32, bfloat16, float16.")
flags.DEFINE_bool("overwrite", False, "Discard earlier results in output_dir.")
flags.DEFINE_enum(
    "decoder",
    "attention",
    ["attention", "ctc_greedy", "rescoring"],
    "attention: the attention search (joint with --ctc_weight, fused with --lm); ctc_greedy: "
    "the CTC head's best path; rescoring: the CTC N-best rescored by the decoder.",
)
flags.DEFINE_float(
    "ctc_weight", 0.0, "CTC weight of joint decoding / rescoring (needs a CTC head)."
)
flags.DEFINE_string("lm", None, "Language model (our LM dir or a fairseq transformer_lm .pt).")
flags.DEFINE_float("lm_weight", 0.0, "Shallow-fusion weight of --lm.")
flags.DEFINE_float("length_bonus", 0.0, "Added to the score of every generated token.")
flags.DEFINE_float(
    "maxlenratio",
    None,
    "ESPnet's: at most max(1, int(R * T)) tokens per utterance, T its encoder frames after "
    "subsampling (0: T); a hypothesis reaching it ends with eos. Attention search only.",
)
flags.DEFINE_float(
    "minlenratio", None, "ESPnet's: at least int(R * T) tokens per utterance. Attention only."
)
flags.DEFINE_integer("ctc_beam", 10, "N-best size of the CTC prefix beam search (rescoring).")
flags.DEFINE_bool(
    "long_form",
    False,
    "The manifest lists whole recordings: segment, decode and score each whole; for ST with "
    "a <manifest stem>_segments.json of reference segments, also BLEU after re-segmentation "
    "and on the gold segments (needs processor files with the checkpoint; see "
    "docs/evaluation.md).",
)
flags.DEFINE_enum("segmenter", "pause", list(SEGMENTERS), "Long-form segmentation.")
flags.DEFINE_float("window_seconds", None, "Longest long-form segment (default: encoder reach).")
flags.DEFINE_bool(
    "strict", False, "A bad manifest row or unreadable audio ends the run (default: skip it)."
)
flags.DEFINE_string("compilation_cache", None, "Persistent XLA compilation cache dir.")
flags.mark_flags_as_required(["checkpoint", "manifest"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.cpu_devices:
        from s2t_jax.parallel.host_devices import use_cpu_cores

        # Before anything starts JAX: each core then searches its own rows (docs/generation.md).
        use_cpu_cores(None if FLAGS.cpu_devices < 0 else FLAGS.cpu_devices)
    distributed.initialize()
    from s2t_jax.decoding.compilation_cache import enable_compilation_cache
    from s2t_jax.evaluation import evaluate, outputs, sources
    from s2t_jax.evaluation.decoders import DecoderChoice

    if FLAGS.compilation_cache:
        enable_compilation_cache(FLAGS.compilation_cache)
    data_config = FLAGS.data_config
    if data_config is None and _CONFIG.value is not None:
        data_config = sources.data_config_path(_CONFIG.value)
    stem = os.path.splitext(os.path.basename(FLAGS.manifest))[0]
    if FLAGS.long_form:
        _long_form(FLAGS.output_dir or os.path.join("eval", stem), data_config)
        return
    results = evaluate.evaluate(
        FLAGS.checkpoint,
        FLAGS.manifest,
        FLAGS.output_dir or os.path.join("eval", stem),
        data_config=data_config,
        num_beams=FLAGS.num_beams,
        max_length=FLAGS.max_length,
        batch_size=FLAGS.batch_size,
        buckets=[int(b) for b in FLAGS.buckets],
        task=FLAGS.task,
        wer_tokenizer=FLAGS.wer_tokenizer,
        wer_lowercase=FLAGS.wer_lowercase,
        wer_remove_punctuation=FLAGS.wer_remove_punctuation,
        wer_char_level=FLAGS.wer_char_level,
        char_bleu=FLAGS.char_bleu,
        tgt_lang=FLAGS.tgt_lang,
        num_devices=FLAGS.num_devices,
        dtype=FLAGS.dtype,
        overwrite=FLAGS.overwrite,
        strict=FLAGS.strict,
        maxlenratio=FLAGS.maxlenratio,
        minlenratio=FLAGS.minlenratio,
        decoder=DecoderChoice(
            FLAGS.decoder,
            FLAGS.ctc_weight,
            FLAGS.lm,
            FLAGS.lm_weight,
            FLAGS.length_bonus,
            FLAGS.ctc_beam,
        ),
    )
    if results:  # process 0
        print(outputs.summary_line(results))


def _long_form(output_dir, data_config):
    import json

    from s2t_jax.evaluation.checkpoint import load_checkpoint
    from s2t_jax.evaluation.long_form import evaluate_long_form
    from s2t_jax.evaluation.metrics import TextNormalizer
    from s2t_jax.evaluation.sources import long_form_processor

    loaded = load_checkpoint(FLAGS.checkpoint, FLAGS.dtype)
    try:
        processor = long_form_processor(loaded, data_config)
    except FileNotFoundError as e:
        raise app.UsageError(str(e)) from e
    if FLAGS.decoder != "attention":
        raise app.UsageError(
            f"--long_form decodes with the attention search (optionally --ctc_weight, --lm); "
            f"--decoder {FLAGS.decoder} is not supported there"
        )
    if (FLAGS.lm is None) != (not FLAGS.lm_weight):
        raise app.UsageError("--lm and --lm_weight go together (shallow fusion)")
    kwargs = {k: getattr(FLAGS, k) for k in ("num_beams", "max_length") if getattr(FLAGS, k)}
    for key in ("ctc_weight", "lm_weight", "length_bonus"):
        if getattr(FLAGS, key):
            kwargs[key] = getattr(FLAGS, key)
    for key in ("maxlenratio", "minlenratio"):
        if getattr(FLAGS, key) is not None:
            kwargs[key] = getattr(FLAGS, key)
    if FLAGS.lm is not None:
        from s2t_jax.checkpoints.lm import load_lm

        kwargs["lm"] = load_lm(FLAGS.lm)
    results = evaluate_long_form(
        loaded.model,
        processor,
        FLAGS.manifest,
        output_dir,
        segmenter=FLAGS.segmenter,
        window_seconds=FLAGS.window_seconds,
        batch_size=FLAGS.batch_size,
        normalizer=TextNormalizer(
            FLAGS.wer_tokenizer,
            FLAGS.wer_lowercase,
            FLAGS.wer_remove_punctuation,
            FLAGS.wer_char_level,
        ),
        task=FLAGS.task,
        tgt_lang=FLAGS.tgt_lang,
        char_bleu=FLAGS.char_bleu,
        **kwargs,
    )
    keys = ("metrics", "recordings", "resegmented", "gold_segmentation", "word_times")
    print(json.dumps({k: results[k] for k in keys}))


if __name__ == "__main__":
    app.run(main)
