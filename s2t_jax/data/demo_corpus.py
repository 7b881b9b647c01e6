"""`python -m s2t_jax.data.demo_corpus`: see s2t_jax.data.prep.demo_corpus."""

from s2t_jax.data.prep.demo_corpus import main

if __name__ == "__main__":
    main()
