"""Corpus builders that write fairseq's layout: LibriSpeech and the synthetic demo corpus."""
