"""Weights on disk: Orbax I/O, transformers and fairseq conversion, export and averaging."""
