"""The Speech2Text tokenizer's files, in the hub's layouts, read and written.

A tokenizer directory holds vocab.json (fairseq's dictionary as piece -> id) and
sentencepiece.bpe.model, plus tokenizer_config.json (transformers 5) and, in the older layout
of facebook/s2t-*, special_tokens_map.json; added_tokens.json lists tokens added after the
vocabulary (read only when tokenizer_config.json has no added_tokens_decoder, as transformers). Reading merges the two configs (tokenizer_config.json
wins) into the tokenizer's constructor arguments; writing produces what transformers reads.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["read_tokenizer_files", "write_tokenizer_files"]

VOCAB_FILES_NAMES = {"vocab_file": "vocab.json", "spm_file": "sentencepiece.bpe.model"}
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
# Keys transformers writes that name files or classes rather than configure the tokenizer.
NOT_ARGUMENTS = (
    "tokenizer_class",
    "processor_class",
    "name_or_path",
    "special_tokens_map_file",
    "tokenizer_file",
    "backend",
)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, value: dict[str, Any]) -> str:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return str(path)


def read_tokenizer_files(directory: str | os.PathLike) -> tuple[Path, Path, dict[str, Any]]:
    """-> (vocab.json, sentencepiece.bpe.model, constructor arguments from the configs).

    Raises OSError naming the directory when either vocabulary file is missing.
    """
    directory = Path(directory)
    files = {key: directory / name for key, name in VOCAB_FILES_NAMES.items()}
    for path in files.values():
        if not path.is_file():
            raise OSError(f"{directory}: missing tokenizer file {path.name}")
    config: dict[str, Any] = {}
    if (directory / TOKENIZER_CONFIG_FILE).is_file():
        config = _read_json(directory / TOKENIZER_CONFIG_FILE)
    if (directory / SPECIAL_TOKENS_MAP_FILE).is_file():
        for key, value in _read_json(directory / SPECIAL_TOKENS_MAP_FILE).items():
            config.setdefault(key, value)
    if "added_tokens_decoder" not in config and (directory / ADDED_TOKENS_FILE).is_file():
        added = _read_json(directory / ADDED_TOKENS_FILE)
        config["added_tokens_decoder"] = {
            str(index): {"content": token, "normalized": True} for token, index in added.items()
        }
    for key in NOT_ARGUMENTS:
        config.pop(key, None)
    return files["vocab_file"], files["spm_file"], config


def write_tokenizer_files(
    save_directory: str | os.PathLike,
    vocab: dict[str, int],
    spm_file: str,
    sp_model,
    config: dict[str, Any],
    special_tokens_map: dict[str, Any] | None = None,
    added_vocab: dict[str, int] | None = None,
) -> tuple[str, ...]:
    """Write tokenizer_config.json, vocab.json and sentencepiece.bpe.model (copied from
    `spm_file` when it exists, else serialised from the loaded `sp_model`), then
    special_tokens_map.json and added_tokens.json when given (and non-empty).
    Returns the paths written, in that order."""
    save_directory = Path(save_directory)
    save_directory.mkdir(parents=True, exist_ok=True)
    vocab_path = save_directory / VOCAB_FILES_NAMES["vocab_file"]
    spm_path = save_directory / VOCAB_FILES_NAMES["spm_file"]
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, indent=2)
    if os.path.isfile(spm_file):
        if os.path.abspath(spm_file) != os.path.abspath(spm_path):
            shutil.copyfile(spm_file, spm_path)
    else:
        spm_path.write_bytes(sp_model.serialized_model_proto())
    written = [_write_json(save_directory / TOKENIZER_CONFIG_FILE, config)]
    written += [str(vocab_path), str(spm_path)]
    if special_tokens_map is not None:
        written.append(_write_json(save_directory / SPECIAL_TOKENS_MAP_FILE, special_tokens_map))
    if added_vocab:
        written.append(_write_json(save_directory / ADDED_TOKENS_FILE, added_vocab))
    return tuple(written)
