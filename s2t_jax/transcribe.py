"""`python -m s2t_jax.transcribe --model DIR FILES...`: see s2t_jax.decoding.transcribe."""

import sys

from s2t_jax.decoding.transcribe import main

if __name__ == "__main__":
    sys.exit(main())
