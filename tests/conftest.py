"""Shared test setup: JAX on the CPU, float32 matmuls exact enough for reference checks."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# Several tests compile the same program again (a train step built anew for a
# resumed run, the same tiny model in several fixtures): JAX's persistent
# compilation cache, private to this test session, lets them reuse it. The
# executable is the same, so results are too.
import tempfile  # noqa: E402

jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp(prefix="zsi_jax_test_cache_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
