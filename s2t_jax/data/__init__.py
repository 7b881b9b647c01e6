"""Data preparation: corpora, manifests and vocabularies in fairseq's S2T layout."""
