"""zsi_jax.training."""
