"""A run's front end: where its tokenizer and feature settings come from, and the `Frontend`
that applies them (audio path -> features, generated ids -> text).

The settings come from the first source that applies:
  1. `data_config`, a fairseq config.yaml, when given;
  2. the checkpoint's own files: transformers-style processor files in a model directory, or the
     data config recorded in a training workdir's train_config.json;
  3. the config.yaml beside the manifest (fairseq's layout; what a fairseq .pt needs).
Relative audio paths are joined to the audio_root of the explicit or beside-the-manifest data
config, else to the manifest's directory. Features always go through `Featurizer`, the one
audio -> features path training and the feature extractor use too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from s2t_jax.checkpoints.workdir import recorded_data_config
from s2t_jax.data.data_config import DataConfig
from s2t_jax.evaluation.checkpoint import LoadedCheckpoint
from s2t_jax.frontend.featurize import Featurizer


@dataclasses.dataclass
class Frontend:
    """Audio path -> normalised features, and generated ids -> text, as the model expects."""

    source: str  # where the settings came from, for results.json and the resume fingerprint
    audio_root: str
    featurizer: Featurizer
    decode_ids: Callable[[np.ndarray], str]  # ids after the decoder start token -> text
    lang_id: Callable[[str], int] | None = None  # <lang:xx> token id; None: no language tags

    @property
    def num_mel_bins(self) -> int:
        return self.featurizer.num_mel_bins

    def load(self, audio: str) -> tuple[np.ndarray, float]:
        """-> (features float32 [frames, mels], seconds of audio). Raises OSError/ValueError."""
        return self.featurizer(audio, self.audio_root)

    def decode(self, ids: np.ndarray) -> str:
        """Generated ids [max_length] (decoder start token first) -> text, one line."""
        return " ".join(self.decode_ids(np.asarray(ids)[1:]).split())


def processor_frontend(model_dir: str, audio_root: str) -> Frontend:
    """Tokenizer and feature extractor saved with a model (transformers' files)."""
    from s2t_jax.frontend.processor import Speech2TextProcessor

    processor = Speech2TextProcessor.from_pretrained(model_dir)
    tokenizer = processor.tokenizer
    codes = getattr(tokenizer, "lang_code_to_id", None) or {}
    return Frontend(
        source=f"processor files in {model_dir}",
        audio_root=audio_root,
        # The extractor's own CMVN (global or utterance), the one it applies to waveforms.
        featurizer=Featurizer.from_extractor(processor.feature_extractor),
        decode_ids=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
        lang_id=codes.__getitem__ if codes else None,
    )


def data_config_frontend(yaml_path: str, split: str, audio_root: str) -> Frontend:
    """fairseq's data config: spm + dictionary, and the split's eval-time CMVN (as training's
    validation applies it, so eval scores match what training saw)."""
    data = _load_data_config(yaml_path)
    encoder = data.target_encoder()
    index = encoder.dictionary.index

    def lang_id(lang: str) -> int:
        tag = f"<lang:{lang}>"
        if tag not in index:
            raise KeyError(f"language tag {tag} is not in {encoder.dict_path}")
        return index[tag]

    return Frontend(
        source=f"data config {os.path.abspath(yaml_path)} (split {split})",
        audio_root=audio_root,
        featurizer=data.featurizer(split, is_train=False),
        decode_ids=encoder.decode,
        lang_id=lang_id if data.prepend_tgt_lang_tag else None,
    )


def _has_processor_files(directory: str | None) -> bool:
    if not directory or not os.path.isdir(directory):
        return False
    names = set(os.listdir(directory))
    has_extractor = bool({"preprocessor_config.json", "processor_config.json"} & names)
    return has_extractor and {"vocab.json", "sentencepiece.bpe.model"} <= names


def _load_data_config(path: str) -> DataConfig:
    path = os.path.abspath(path)
    return DataConfig.load(os.path.dirname(path), os.path.basename(path))


def data_config_path(train_config) -> str:
    """The data config named by a training config (ml_collections): data.root/config_yaml."""
    return os.path.join(train_config.data.root, train_config.data.config_yaml)


def long_form_processor(loaded: LoadedCheckpoint, data_config: str | None = None):
    """The Speech2TextProcessor that `--long_form` decodes with (transcribe's tokenizer and
    feature extractor): the model dir's processor files, else ones written (to a temporary
    dir, read back at once) from `data_config` or a training workdir's recorded data config, as an export would
    write them, so an averaged checkpoint or a workdir can be evaluated on whole recordings."""
    import tempfile

    from s2t_jax.checkpoints.export import write_processor_files
    from s2t_jax.frontend.processor import Speech2TextProcessor

    model_dir = getattr(loaded.model, "source_dir", None)
    if _has_processor_files(model_dir) and not data_config:
        return Speech2TextProcessor.from_pretrained(model_dir)
    path = data_config or (recorded_data_config(loaded.workdir) if loaded.workdir else None)
    if not path:
        raise FileNotFoundError(
            f"--long_form: {model_dir or 'the checkpoint'} has no processor files and no data "
            "config was given: pass --data_config (a fairseq config.yaml), or export the run "
            "with convert_checkpoint.py"
        )
    with tempfile.TemporaryDirectory(prefix="s2t_processor_") as out:
        write_processor_files(_load_data_config(path), out)
        return Speech2TextProcessor.from_pretrained(out)  # read into memory here


def choose_frontend(
    loaded: LoadedCheckpoint, manifest: str, data_config: str | None = None
) -> Frontend:
    """Picks tokenizer + feature settings; see the module docstring for the order."""
    manifest = os.path.abspath(manifest)
    split = os.path.splitext(os.path.basename(manifest))[0]
    beside = os.path.join(os.path.dirname(manifest), "config.yaml")
    local = data_config or (beside if os.path.isfile(beside) else None)
    audio_root = _load_data_config(local).audio_root if local else os.path.dirname(manifest)
    if data_config:
        return data_config_frontend(data_config, split, audio_root)
    model_dir = getattr(loaded.model, "source_dir", None)
    if _has_processor_files(model_dir):
        return processor_frontend(model_dir, audio_root)
    recorded = recorded_data_config(loaded.workdir) if loaded.workdir else None
    if recorded:
        return data_config_frontend(recorded, split, audio_root)
    if local:
        return data_config_frontend(local, split, audio_root)
    raise FileNotFoundError(
        f"no tokenizer / feature settings for {manifest}: the checkpoint has no processor files "
        f"and there is no {beside}; pass data_config (a fairseq config.yaml)"
    )
