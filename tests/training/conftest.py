"""Training tests compile many small, often identical, programs: share a compilation cache.

The cache lives in a per-session temporary directory, so every session starts cold (timings
stay honest) but a program compiled by one test is reused by the next.
"""

import jax
import pytest

_OPTIONS = {
    "jax_compilation_cache_dir": None,
    "jax_persistent_cache_min_compile_time_secs": 0.0,
    "jax_persistent_cache_min_entry_size_bytes": 0,
}


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    saved = {k: getattr(jax.config, k) for k in _OPTIONS}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    for k, v in saved.items():
        jax.config.update(k, v)
