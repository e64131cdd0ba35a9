"""Shared test setup: JAX on the CPU, float32 matmuls exact enough for reference checks."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
