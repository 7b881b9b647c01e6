"""fairseq's S2T data config (`config.yaml`): vocabulary, tokenizer, feature transforms.

The file is the one fairseq's prep scripts write and `fairseq-train --config-yaml` reads. Keys we
use (all optional except the vocabulary):

    vocab_filename: spm_unigram10000.txt          # fairseq dictionary, relative to the data root
    bpe_tokenizer: {bpe: sentencepiece, sentencepiece_model: /abs/or/rel/spm_unigram10000.model}
    input_feat_per_channel: 80
    input_channels: 1
    audio_root: ""                                # prefix for relative audio paths
    prepend_tgt_lang_tag: false                   # <lang:xx> first in every target
    transforms | feature_transforms:              # per split; `_train`, `_eval` and `*` wildcards
      _train: [utterance_cmvn, specaugment]
      '*': [utterance_cmvn]
    specaugment: {time_wrap_W: 0, freq_mask_N: 2, freq_mask_F: 27, time_mask_N: 2,
                  time_mask_T: 100, time_mask_p: 1.0}
    global_cmvn: {stats_npz_path: gcmvn.npz}
    utterance_cmvn: {norm_means: true, norm_vars: true}

Transforms are looked up as fairseq does: the split's own name, then `_train` (train splits) or
`_eval` (others), then `*`; entries of the deprecated `transforms` key come first. CMVN runs on
the host (in the loader's workers); specaugment runs on device inside the train step.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import yaml

from s2t_jax.data.vocab import TargetEncoder
from s2t_jax.frontend.featurize import Featurizer
from s2t_jax.frontend.specaugment import SpecAugmentPolicy

KNOWN_TRANSFORMS = ("utterance_cmvn", "global_cmvn", "specaugment")


@dataclasses.dataclass
class DataConfig:
    root: str  # the data root: manifests and relative paths live here
    raw: dict[str, Any]

    @classmethod
    def load(cls, root: str | os.PathLike, yaml_name: str = "config.yaml") -> DataConfig:
        root = os.fspath(root)
        path = yaml_name if os.path.isabs(yaml_name) else os.path.join(root, yaml_name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no data config (fairseq's config.yaml)")
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping at the top level")
        return cls(root=root, raw=raw)

    # --- paths ---------------------------------------------------------------------------------

    def path(self, value: str | None) -> str | None:
        """A file named in the config: absolute as is (else its name in the root), or relative
        to the root. fairseq writes absolute paths, so data moved elsewhere still resolves."""
        if not value:
            return None
        if os.path.isabs(value):
            if os.path.exists(value):
                return value
            value = os.path.basename(value)
        return os.path.join(self.root, value)

    @property
    def audio_root(self) -> str:
        value = self.raw.get("audio_root") or ""
        return value if os.path.isabs(value) else os.path.join(self.root, value)

    @property
    def vocab_path(self) -> str:
        value = self.raw.get("vocab_filename")
        if not value:
            raise ValueError(f"{self.root}: data config has no vocab_filename")
        return self.path(value)

    @property
    def spm_path(self) -> str | None:
        bpe = self.raw.get("bpe_tokenizer") or {}
        if not bpe:
            return None
        if bpe.get("bpe", "sentencepiece") != "sentencepiece":
            raise ValueError(f"bpe_tokenizer {bpe.get('bpe')!r}: only sentencepiece is supported")
        return self.path(bpe.get("sentencepiece_model"))

    # --- scalar settings -------------------------------------------------------------------------

    @property
    def input_feat_per_channel(self) -> int:
        return int(self.raw.get("input_feat_per_channel", 80))

    @property
    def input_channels(self) -> int:
        return int(self.raw.get("input_channels", 1))

    @property
    def prepend_tgt_lang_tag(self) -> bool:
        return bool(self.raw.get("prepend_tgt_lang_tag", False))

    @property
    def sampling_rate(self) -> int:
        return int(self.raw.get("sampling_rate", 16000))

    def target_encoder(self) -> TargetEncoder:
        return TargetEncoder(self.vocab_path, self.spm_path, self.prepend_tgt_lang_tag)

    # --- transforms ------------------------------------------------------------------------------

    def _lookup(self, key: str, split: str, is_train: bool):
        table = self.raw.get(key) or {}
        for name in (split, "_train" if is_train else "_eval", "*"):
            if table.get(name) is not None:
                return list(table[name])
        return None

    def transforms(self, split: str, is_train: bool) -> list[str]:
        """Names of the feature transforms for a split, in order."""
        names = (self._lookup("transforms", split, is_train) or []) + (
            self._lookup("feature_transforms", split, is_train) or []
        )
        unknown = [n for n in names if n not in KNOWN_TRANSFORMS]
        if unknown:
            raise ValueError(f"unsupported feature transforms {unknown}; known: {KNOWN_TRANSFORMS}")
        return names

    def cmvn(self, split: str, is_train: bool) -> list[dict[str, Any]]:
        """The host-side normalisations, in order: [{"kind": "utterance"|"global", ...}]."""
        steps = []
        for name in self.transforms(split, is_train):
            if name == "global_cmvn":
                stats = (self.raw.get("global_cmvn") or {}).get("stats_npz_path")
                if not stats:
                    raise ValueError("global_cmvn transform needs global_cmvn.stats_npz_path")
                steps.append({"kind": "global", "stats_npz_path": self.path(stats)})
            elif name == "utterance_cmvn":
                opts = self.raw.get("utterance_cmvn") or {}
                steps.append(
                    {
                        "kind": "utterance",
                        "norm_means": bool(opts.get("norm_means", True)),
                        "norm_vars": bool(opts.get("norm_vars", True)),
                    }
                )
        return steps

    def featurizer(self, split: str, is_train: bool) -> Featurizer:
        """The split's audio -> features path: its CMVN as `feature_transforms` lists it."""
        num_mel_bins = self.input_feat_per_channel * self.input_channels
        return Featurizer(self.sampling_rate, num_mel_bins, self.cmvn(split, is_train))

    def specaugment(self, split: str, is_train: bool) -> SpecAugmentPolicy | None:
        if "specaugment" not in self.transforms(split, is_train):
            return None
        return SpecAugmentPolicy.from_fairseq(self.raw.get("specaugment") or {})
