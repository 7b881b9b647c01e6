"""Test-wide set-up: 8 fake CPU devices (for sharding tests) and a deterministic torch."""

import os

# Must happen before jax is imported anywhere: multi-device tests shard over fake CPU devices.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
