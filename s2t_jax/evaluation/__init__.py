"""Checkpoint + manifest to scores: batch evaluation, metrics and output files."""
