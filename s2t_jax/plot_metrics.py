"""`python -m s2t_jax.plot_metrics WORKDIR`: see s2t_jax.training.plot_metrics."""

from s2t_jax.training.plot_metrics import main

if __name__ == "__main__":
    main()
