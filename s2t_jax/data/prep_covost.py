"""`python -m s2t_jax.data.prep_covost`: see s2t_jax.data.prep.covost."""

from s2t_jax.data.prep.covost import main

if __name__ == "__main__":
    main()
