"""zsi_jax.data."""
