"""JAX's persistent compilation cache, so a new process reuses compiled searches."""

from __future__ import annotations

import os

import jax


def enable_compilation_cache(directory: str | os.PathLike, min_compile_seconds: float = 0.0):
    """Turns on JAX's persistent compilation cache in `directory`.

    A later process with the same shapes and settings loads the compiled search from disk
    instead of compiling it again (seconds saved per bucket on a cold start).
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return directory
