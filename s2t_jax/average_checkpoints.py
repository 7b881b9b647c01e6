"""`python -m s2t_jax.average_checkpoints`: see s2t_jax.checkpoints.averaging."""

from s2t_jax.checkpoints.averaging import main

if __name__ == "__main__":
    main()
