"""Features to token ids: generation settings, greedy and beam search, `generate`, buckets."""
