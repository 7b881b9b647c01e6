"""Audio in, features and token ids out: audio I/O, fbank + CMVN, tokenizer, processor."""
