"""`python -m s2t_jax.data.prep_librispeech`: see s2t_jax.data.prep.librispeech."""

from s2t_jax.data.prep.librispeech import main

if __name__ == "__main__":
    main()
