"""zsi_jax.ops."""
