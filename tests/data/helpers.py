"""What several tests need from the input stage: one batch of a split, as training loads it."""

from s2t_jax.data.loader import make_loader
from s2t_jax.data.split import load_split


def first_batch(data, subset, max_frames, max_target_positions, *, is_train=False, **loader_args):
    """The first batch of `subset` (seed 0), with the loader's workers stopped afterwards."""
    split = load_split(data, subset, data.target_encoder(), max_frames, max_target_positions)
    loader = make_loader(data, split, subset, is_train=is_train, seed=0, **loader_args)
    try:
        return next(loader)
    finally:
        loader.close()
