"""Layers: nn.Conv / nn.Dense / nn.ConvTranspose parameters, values and gradients,
whichever computation a convolution is given."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsi_jax.modeling import cpu_kernels
from zsi_jax.modeling.layers import (Conv1x1, Conv3x3, Deconv2x, Linear, conv1x1_direct,
                                     conv1x1_matmul, conv3x3_direct)

CONV3X3 = {'direct': conv3x3_direct, 'im2col_grad': cpu_kernels.conv3x3_im2col_grad,
           'winograd': cpu_kernels.conv3x3_winograd}
CONV1X1 = {'direct': conv1x1_direct, 'matmul': conv1x1_matmul, 'cpu': cpu_kernels.conv1x1_cpu}


def _perturbed(v):
  return jax.tree_util.tree_map(lambda a: a + jax.random.normal(jax.random.PRNGKey(1), a.shape), v)


def _assert_same_function(ours, ref, v, x, atol_value, atol_grad):
  """``ours`` equals ``ref`` (a Flax reference layer) in values and in gradients
  with respect to the parameters and the input."""
  assert jax.tree_util.tree_map(jnp.shape, ours.init(jax.random.PRNGKey(0), x)) == \
      jax.tree_util.tree_map(jnp.shape, v)
  y = ref.apply(v, x)
  np.testing.assert_allclose(ours.apply(v, x), y, rtol=1e-5, atol=atol_value)
  w = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), jnp.float32)
  g_ours = jax.grad(lambda v, x: jnp.sum(ours.apply(v, x) * w), argnums=(0, 1))(v, x)
  g_ref = jax.grad(lambda v, x: jnp.sum(ref.apply(v, x) * w), argnums=(0, 1))(v, x)
  for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol_grad)


@pytest.mark.parametrize('form', sorted(CONV3X3))
def test_conv3x3_matches_nn_conv(form):
  # Every computation: nn.Conv's parameters, values and gradients (the
  # Winograd form rounds differently, by about 1e-5 of the output's scale).
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 5, 7)), jnp.float32)
  ref = nn.Conv(4, (3, 3), padding=1)
  v = _perturbed(ref.init(jax.random.PRNGKey(0), x))
  scale = 10.0 if form == 'winograd' else 1.0
  _assert_same_function(Conv3x3(4, compute=CONV3X3[form]), ref, v, x, 1e-4 * scale, 1e-3 * scale)


@pytest.mark.parametrize('form', sorted(CONV1X1))
@pytest.mark.parametrize('stride,use_bias', [(1, True), (2, False)])
def test_conv1x1_matches_nn_conv(form, stride, use_bias):
  # The backbone's 1x1 (and strided downsample) convolutions, the FPN laterals
  # and the RPN projections, odd sizes included (output ceil(H / stride)).
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 6, 5)), jnp.float32)
  ref = nn.Conv(4, (1, 1), strides=(stride, stride), padding=[(0, 0), (0, 0)], use_bias=use_bias)
  v = _perturbed(ref.init(jax.random.PRNGKey(0), x))
  ours = Conv1x1(4, stride=stride, use_bias=use_bias, compute=CONV1X1[form])
  assert ours.apply(v, x).shape == (2, -(-7 // stride), -(-6 // stride), 4)
  _assert_same_function(ours, ref, v, x, 1e-5, 1e-4)


@pytest.mark.parametrize('form', sorted(CONV1X1))
def test_conv1x1_then_folds_a_linear_map(form):
  # BA-RPN folds T and W_bf into one matrix: conv(x) @ then, same values and
  # gradients for the kernel, the bias and ``then`` itself.
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 5, 3, 6)), jnp.float32)
  then = jnp.asarray(rng.normal(size=(9, 4)), jnp.float32)
  conv = Conv1x1(9, compute=CONV1X1[form])
  v = jax.tree_util.tree_map(lambda a: a + 0.3, conv.init(jax.random.PRNGKey(0), x))
  w = jnp.asarray(rng.normal(size=(2, 5, 3, 4)), jnp.float32)
  loss = lambda fn: lambda v, t: jnp.sum(fn(v, t) * w)
  folded = lambda v, t: conv.apply(v, x, then=t)
  plain = lambda v, t: conv.apply(v, x) @ t
  np.testing.assert_allclose(folded(v, then), plain(v, then), rtol=1e-5, atol=1e-5)
  g_f = jax.grad(loss(folded), argnums=(0, 1))(v, then)
  g_p = jax.grad(loss(plain), argnums=(0, 1))(v, then)
  for a, b in zip(jax.tree_util.tree_leaves(g_f), jax.tree_util.tree_leaves(g_p)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def test_linear_is_nn_dense_and_folds_then():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(3, 4, 5, 6)), jnp.float32)
  dense = nn.Dense(7)
  v = jax.tree_util.tree_map(lambda a: a + 0.1, dense.init(jax.random.PRNGKey(0), x))
  lin = Linear(7, 6)
  assert jax.tree_util.tree_map(jnp.shape, lin.init(jax.random.PRNGKey(0), x)) == \
      jax.tree_util.tree_map(jnp.shape, v)
  y = dense.apply(v, x)
  np.testing.assert_allclose(lin.apply(v, x), y, rtol=1e-5, atol=1e-5)
  shared = jnp.asarray(rng.normal(size=(7, 2)), jnp.float32)
  per_row = jnp.asarray(rng.normal(size=(3, 7, 2)), jnp.float32)
  np.testing.assert_allclose(lin.apply(v, x, shared), y @ shared, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(lin.apply(v, x, per_row),
                             jnp.einsum('nhwd,ndk->nhwk', y, per_row), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('matmul', [jnp.matmul, cpu_kernels.channel_matmul],
                         ids=['plain', 'cpu'])
def test_deconv2x_is_the_stride2_transposed_convolution(matmul):
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 6, 7)), jnp.float32)
  ref = nn.ConvTranspose(4, (2, 2), strides=(2, 2))
  v = _perturbed(ref.init(jax.random.PRNGKey(0), x))
  _assert_same_function(Deconv2x(4, matmul=matmul), ref, v, x, 1e-5, 1e-4)
