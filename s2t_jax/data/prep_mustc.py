"""`python -m s2t_jax.data.prep_mustc`: see s2t_jax.data.prep.mustc."""

from s2t_jax.data.prep.mustc import main

if __name__ == "__main__":
    main()
