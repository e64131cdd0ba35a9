"""zsi_jax.evaluation."""
