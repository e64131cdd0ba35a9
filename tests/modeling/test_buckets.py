"""Mask-RoI slot buckets: the sizes, the bucket chosen, and a switch whose
gradients are computed in the forward pass equal to plain differentiation."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsi_jax.modeling import buckets


def test_slot_buckets_and_the_smallest_that_holds_the_positives():
  assert buckets.slot_buckets(128, 4) == (16, 32, 64, 128)
  assert buckets.slot_buckets(8, 1) == (8,)
  assert buckets.slot_buckets(2, 4) == (1, 2)
  sizes = (16, 32, 64, 128)
  for counts, want in (([3, 16], 0), ([17, 2], 1), ([64, 0], 2), ([65, 1], 3), ([0, 0], 0)):
    assert int(buckets.smallest_bucket(jnp.asarray(counts), sizes)) == want, counts


class _Head(nn.Module):
  """A loss on the first ``slots`` rows, in pieces of ``size`` rows:
  sum((Dense(x) . w)^2) * scale."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x)

  def loss(self, diff, rest, slots, size=None, piece=0):
    x, w = diff
    scale, = rest
    size = size or slots
    rows = jax.lax.dynamic_slice_in_dim(x[:slots], piece * size, size)
    y = self(rows) @ w
    value = jnp.sum(y ** 2) * scale
    return value, (value, jnp.sum(y))

  def switched(self, index, x, w, scale, pieces, active=None):
    branches = [functools.partial(_Head.loss, slots=n, size=n // p)
                for n, p in zip((2, 4), pieces)]
    return buckets.switch_with_gradients(self, index, branches, (x, w), (scale,), pieces,
                                         active)


def test_pieces_cover_a_bucket_in_equal_parts():
  assert buckets.pieces(128, 32) == (4, 32)
  assert buckets.pieces(100, 32) == (4, 25)
  assert buckets.pieces(16, 32) == (1, 16)
  assert buckets.pieces(128, 0) == (1, 128)


@pytest.mark.parametrize('pieces', [(1, 1), (2, 4)])
def test_switch_with_gradients_equals_plain_differentiation(pieces):
  # (2, 4): each bucket runs one row at a time, the sum of its pieces.
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3,)), jnp.float32)
  head = _Head()
  variables = head.init(jax.random.PRNGKey(0), x)
  for index, slots in ((0, 2), (1, 4)):
    def fused(v, x, w):
      loss, aux = head.apply(v, index, x, w, 0.5, pieces, method=_Head.switched)
      return 3.0 * loss + 0.0 * aux[1], aux   # a cotangent other than 1; aux carries none

    def plain(v, x, w):
      value, aux = head.apply(v, (x, w), (0.5,), slots, method=_Head.loss)
      return 3.0 * value, aux

    (got, got_aux), (want, want_aux) = jax.jit(fused)(variables, x, w), plain(variables, x, w)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_aux, want_aux, rtol=1e-5, atol=1e-6)
    g_fused = jax.jit(jax.grad(lambda *a: fused(*a)[0], argnums=(0, 1, 2)))(variables, x, w)
    g_plain = jax.grad(lambda *a: plain(*a)[0], argnums=(0, 1, 2))(variables, x, w)
    for a, b in zip(jax.tree_util.tree_leaves(g_fused), jax.tree_util.tree_leaves(g_plain)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Rows beyond the bucket get no gradient.
    assert np.all(np.asarray(g_fused[1])[slots:] == 0)


def test_only_the_active_pieces_run():
  # The 4-row bucket in pieces of one row with 2 active: the loss of rows 0-1
  # (3 or more active: all 4; 0 active: still piece 0).
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(3,)), jnp.float32)
  head = _Head()
  variables = head.init(jax.random.PRNGKey(0), x)
  for active, rows in ((0, 1), (2, 2), (3, 3), (9, 4)):
    def fused(v, x):
      return head.apply(v, 1, x, w, 0.5, (2, 4), (jnp.int32(1), jnp.int32(active)),
                        method=_Head.switched)[0]

    def plain(v, x):
      return head.apply(v, (x, w), (0.5,), rows, method=_Head.loss)[0]

    np.testing.assert_allclose(jax.jit(fused)(variables, x), plain(variables, x), rtol=1e-6)
    g_fused = jax.jit(jax.grad(fused, argnums=(0, 1)))(variables, x)
    g_plain = jax.grad(plain, argnums=(0, 1))(variables, x)
    for a, b in zip(jax.tree_util.tree_leaves(g_fused), jax.tree_util.tree_leaves(g_plain)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
