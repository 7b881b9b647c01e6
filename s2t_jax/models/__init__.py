"""The network: config, subsampler, positions, attention, encoder, decoder and the Flax model."""
