"""zsi_jax.modeling."""
