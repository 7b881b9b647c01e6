"""Shared fixtures of the evaluation tests."""

import jax
import pytest

_CACHE_KEYS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_persistent_cache_min_entry_size_bytes",
)


@pytest.fixture(scope="module")
def module_compilation_cache(tmp_path_factory):
    """A persistent compilation cache for one test module, then the settings as they were.

    Why: a module's runs (one process and sharded, resumed, per language) compile the same
    programs again; with the cache each is compiled once and read from disk after."""
    saved = {k: getattr(jax.config, k) for k in _CACHE_KEYS}
    cache = tmp_path_factory.mktemp("jax_cache")
    for key, value in zip(_CACHE_KEYS, (str(cache), 0.0, -1)):
        jax.config.update(key, value)
    yield cache
    for key, value in saved.items():
        jax.config.update(key, value)
