"""Learning-rate schedule, frozen parameters without updates or state, clipping."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from zsi_jax.config_defaults import base_config
from zsi_jax.training.optimizer import learning_rate_schedule, make_optimizer


def _config(**kw):
  c = base_config()
  c.optim.update(dict(learning_rate=0.01, momentum=0.9, weight_decay=1e-4, clip_norm=35.0,
                      warmup_steps=500, warmup_ratio=1.0 / 3, decay_epochs=(8, 11),
                      decay_factor=0.1, reference_batch=0))
  c.optim.update(kw)
  return c


def test_schedule_warmup_and_step_decay():
  s = learning_rate_schedule(0.01, 500, 1.0 / 3, [800, 1100], 0.1)
  np.testing.assert_allclose(float(s(0)), 0.01 / 3, rtol=1e-6)
  np.testing.assert_allclose(float(s(250)), 0.01 * (1 / 3 + (2 / 3) * 0.5), rtol=1e-6)
  np.testing.assert_allclose(float(s(500)), 0.01, rtol=1e-6)
  np.testing.assert_allclose(float(s(799)), 0.01, rtol=1e-6)
  np.testing.assert_allclose(float(s(801)), 0.001, rtol=1e-5)
  np.testing.assert_allclose(float(s(1101)), 0.0001, rtol=1e-5)


def test_frozen_params_get_no_update_and_no_state():
  params = {'frozen': {'w': jnp.ones((3, 3))}, 'train': {'w': jnp.ones((3, 3))}}
  trainable = {'frozen': {'w': False}, 'train': {'w': True}}
  tx, _ = make_optimizer(_config(), steps_per_epoch=100, trainable=trainable)
  state = tx.init(params)
  # Momentum buffers exist only for the trainable leaf.
  n_state = sum(x.size for x in jax.tree_util.tree_leaves(state) if hasattr(x, 'size') and x.ndim)
  assert n_state == 9
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_array_equal(np.asarray(updates['frozen']['w']), 0.0)
  assert float(jnp.abs(updates['train']['w']).sum()) > 0


def test_global_norm_clipping():
  params = {'w': jnp.zeros((100,))}
  tx, _ = make_optimizer(_config(clip_norm=1.0, weight_decay=0.0, momentum=0.0, warmup_steps=0),
                         steps_per_epoch=10)
  grads = {'w': jnp.full((100,), 10.0)}
  updates, _ = tx.update(grads, tx.init(params), params)
  # SGD update = -lr * clipped grad; clipped global norm is 1.
  np.testing.assert_allclose(float(optax.global_norm(updates)), 0.01, rtol=1e-5)
