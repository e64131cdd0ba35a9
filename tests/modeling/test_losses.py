"""Loss terms against torch.nn.functional, and padding that contributes nothing."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from zsi_jax.modeling import losses


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 30), st.integers(2, 8), st.integers(0, 2**31 - 1))
def test_softmax_cross_entropy_matches_torch(n, c, seed):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(n, c)).astype(np.float32) * 3
  labels = rng.integers(0, c, size=n)
  weights = rng.random(n) > 0.3
  ours = losses.softmax_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights))
  ref = F.cross_entropy(torch.tensor(logits), torch.tensor(labels), reduction='none')
  ref = (ref * torch.tensor(weights, dtype=torch.float32)).sum()
  np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5, atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 30), st.sampled_from([1.0 / 9, 1.0, 0.0]), st.integers(0, 2**31 - 1))
def test_weighted_smooth_l1_matches_torch(n, beta, seed):
  rng = np.random.default_rng(seed)
  pred = rng.normal(size=(n, 4)).astype(np.float32)
  target = rng.normal(size=(n, 4)).astype(np.float32)
  weights = (rng.random(n) > 0.5).astype(np.float32)
  ours = losses.weighted_smooth_l1(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(weights), beta)
  ref = F.smooth_l1_loss(torch.tensor(pred), torch.tensor(target), reduction='none', beta=beta)
  ref = (ref.sum(-1) * torch.tensor(weights)).sum()
  np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5, atol=1e-5)


def test_sigmoid_bce_matches_torch():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 28, 28)).astype(np.float32) * 4
  targets = (rng.random((5, 28, 28)) > 0.5).astype(np.float32)
  w = np.array([1, 0, 1, 1, 0], np.float32)
  ours = losses.sigmoid_binary_cross_entropy(jnp.asarray(logits), jnp.asarray(targets),
                                             jnp.asarray(w)[:, None, None])
  ref = F.binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor(targets),
                                           reduction='none')
  ref = (ref * torch.tensor(w)[:, None, None]).sum()
  np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5)


def test_padding_with_nan_garbage_gives_finite_loss_and_zero_gradient():
  pred = jnp.array([[0.1, 0.2, 0.3, 0.4], [jnp.nan, jnp.inf, 0.0, 0.0]])
  target = jnp.array([[0.0, 0.0, 0.0, 0.0], [jnp.nan, 0.0, 0.0, 0.0]])
  w = jnp.array([1.0, 0.0])

  def f(p):
    return losses.weighted_smooth_l1(p, target, w, 1.0 / 9)

  value, grad = jax.value_and_grad(f)(pred)
  assert np.isfinite(float(value))
  assert np.all(np.isfinite(np.asarray(grad)))
  np.testing.assert_array_equal(np.asarray(grad[1]), 0.0)

  logits = jnp.array([[1.0, 2.0], [jnp.nan, 0.0]])
  g = jax.grad(lambda l: losses.softmax_cross_entropy(l, jnp.array([1, -1]), w))(logits)
  assert np.all(np.isfinite(np.asarray(g)))
  np.testing.assert_array_equal(np.asarray(g[1]), 0.0)


def test_reconstruction_mse_ignores_padding():
  o = jnp.ones((3, 4, 4, 2))
  r = jnp.zeros((3, 4, 4, 2)).at[2].set(100.0)
  assert float(losses.reconstruction_mse(o, r, jnp.array([1, 1, 0]))) == 1.0
  assert float(losses.reconstruction_mse(o, r, jnp.zeros(3))) == 0.0
