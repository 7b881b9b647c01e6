"""Target text <-> token ids the way fairseq's S2T task does it: sentencepiece + fairseq dictionary.

fairseq does not use sentencepiece ids directly: text is cut into pieces by the spm model, and
each piece is looked up in a fairseq dictionary (`spm_unigram10000.txt`, lines `piece count`)
whose first four indices are fixed: 0 `<s>`, 1 `<pad>`, 2 `</s>`, 3 `<unk>`; line k of the file
is index 4 + k. The prep recipe trains spm with the same four special ids, so piece ids and
dictionary indices agree, but going through the dictionary also reads dictionaries that were not
made that way (and char vocabularies). Without an spm model, text is split on whitespace.

Targets are `tokens + [eos]`, with `<lang:xx>` first when the data config prepends language tags
(multilingual ST); the decoder input is the target shifted right with `eos` in front.
"""

from __future__ import annotations

import os

import numpy as np

BOS, PAD, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
LANG_TAG = "<lang:{}>"
SPM_SPACE = "\u2581"


class FairseqDictionary:
    """fairseq's Dictionary, read-only: symbol <-> index."""

    def __init__(self, symbols):
        self.symbols = list(SPECIALS)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        for s in symbols:
            if s in self.index:
                raise ValueError(f"duplicate symbol {s!r} in dictionary")
            self.index[s] = len(self.symbols)
            self.symbols.append(s)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FairseqDictionary:
        symbols = []
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                line = line.rstrip("\n")
                if not line.strip():
                    continue
                overwrite = line.endswith(" #fairseq:overwrite")
                if overwrite:
                    line = line[: -len(" #fairseq:overwrite")]
                symbol, sep, _count = line.rpartition(" ")
                if not sep or not symbol:
                    raise ValueError(f"{path}:{line_no}: expected '<symbol> <count>'")
                if symbol in SPECIALS or (overwrite and symbol in symbols):
                    continue
                symbols.append(symbol)
        return cls(symbols)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for s in self.symbols[len(SPECIALS) :]:
                f.write(f"{s} 1\n")

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, pieces) -> list[int]:
        return [self.index.get(p, UNK) for p in pieces]


class TargetEncoder:
    """Text -> fairseq target ids (and back), from a dictionary and an optional spm model.

    Picklable (the spm model is reloaded from its path), so worker processes can use it.
    """

    def __init__(
        self, dict_path: str, spm_path: str | None = None, prepend_tgt_lang_tag: bool = False
    ):
        self.dict_path = dict_path
        self.spm_path = spm_path
        self.prepend_tgt_lang_tag = prepend_tgt_lang_tag
        self.dictionary = FairseqDictionary.load(dict_path)
        self._spm = None

    def __getstate__(self):
        return {**self.__dict__, "_spm": None}

    @property
    def spm(self):
        if self._spm is None and self.spm_path:
            import sentencepiece

            self._spm = sentencepiece.SentencePieceProcessor(model_file=self.spm_path)
        return self._spm

    @property
    def vocab_size(self) -> int:
        return len(self.dictionary)

    def pieces(self, text: str) -> list[str]:
        return self.spm.encode(text, out_type=str) if self.spm is not None else text.split()

    def encode(self, text: str, tgt_lang: str = "") -> np.ndarray:
        """-> int32 [tokens + 1]: (lang tag) + pieces + eos."""
        ids = self.dictionary.encode(self.pieces(text))
        if self.prepend_tgt_lang_tag:
            tag = LANG_TAG.format(tgt_lang)
            if tag not in self.dictionary.index:
                raise ValueError(f"language tag {tag} is not in {self.dict_path}")
            ids = [self.dictionary.index[tag]] + ids
        return np.asarray(ids + [EOS], np.int32)

    def decode(self, ids, strip_lang_tag: bool = True) -> str:
        """ids -> text; stops at eos, drops pad/bos (and a leading language tag)."""
        symbols = []
        for i in np.asarray(ids).tolist():
            if i == EOS:
                break
            if i in (BOS, PAD):
                continue
            symbols.append(self.dictionary.symbols[i] if 0 <= i < len(self.dictionary) else "<unk>")
        if strip_lang_tag and symbols and symbols[0].startswith("<lang:"):
            symbols = symbols[1:]
        if self.spm is None:
            return " ".join(symbols)
        return "".join(symbols).replace(SPM_SPACE, " ").strip()
