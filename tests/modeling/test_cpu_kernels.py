"""The CPU's 3x3 convolution forms against the convolution summed tap by tap in float64."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsi_jax.modeling import cpu_kernels
from zsi_jax.modeling.layers import conv3x3_direct


def _taps_float64(x, k):
  h, w = x.shape[1:3]
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(p[:, i:i + h, j:j + w] @ k[i, j] for i in range(3) for j in range(3))


@pytest.mark.parametrize('shape', [(2, 13, 21, 8), (3, 4, 8, 5), (1, 1, 1, 3), (2, 14, 14, 64)])
def test_conv3x3_winograd_matches_float64_taps(shape):
  """Whole, partial and single tiles (sizes not multiples of 4 are padded and
  cropped), error within 3e-5 of the output's scale; a bf16 input gives a bf16
  output computed in float32."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=shape)
  k = rng.normal(size=(3, 3, shape[-1], 6))
  ref = _taps_float64(x, k)
  got = np.asarray(jax.jit(cpu_kernels.conv3x3_winograd)(jnp.asarray(x, jnp.float32),
                                                         jnp.asarray(k, jnp.float32)))
  assert got.shape == shape[:3] + (6,)
  assert np.abs(got - ref).max() <= 3e-5 * np.abs(ref).max()
  got16 = cpu_kernels.conv3x3_winograd(jnp.asarray(x, jnp.bfloat16), jnp.asarray(k, jnp.float32))
  assert got16.dtype == jnp.bfloat16
  assert np.abs(np.asarray(got16, np.float32) - ref).max() <= 2e-2 * np.abs(ref).max()


@pytest.mark.parametrize('shape', [(2, 13, 21, 8), (1, 4, 8, 5), (1, 1, 1, 3)])
def test_conv3x3_winograd_gradients_match_float64_taps(shape):
  """Input and kernel gradients (the tiles' overlap-add among them: a size
  not a multiple of 4 has partial tiles, a 4-multiple whole ones, one pixel a
  single one) against the taps' own, in float64."""
  rng = np.random.default_rng(2)
  x, g = rng.normal(size=shape), rng.normal(size=shape[:3] + (6,))
  k = rng.normal(size=(3, 3, shape[-1], 6))
  n, h, w, _ = shape
  dp = np.zeros((n, h + 2, w + 2, shape[-1]))
  for i in range(3):
    for j in range(3):
      dp[:, i:i + h, j:j + w] += g @ k[i, j].T
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  dk = np.stack([np.einsum('nhwc,nhwo->co', p[:, i:i + h, j:j + w], g)
                 for i in range(3) for j in range(3)]).reshape(k.shape)
  loss = lambda x, k: jnp.sum(cpu_kernels.conv3x3_winograd(x, k) * jnp.asarray(g, jnp.float32))
  got_dx, got_dk = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(x, jnp.float32),
                                                            jnp.asarray(k, jnp.float32))
  assert np.abs(np.asarray(got_dx) - dp[:, 1:-1, 1:-1]).max() <= 3e-5 * np.abs(dp).max()
  assert np.abs(np.asarray(got_dk) - dk).max() <= 3e-5 * np.abs(dk).max()


def test_im2col_kernel_gradient_matches_float64():
  # d/dk of sum(conv(x, k) * g) is sum over pixels of x's taps times g.
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 7, 5, 4))
  k = rng.normal(size=(3, 3, 4, 3))
  g = rng.normal(size=(2, 7, 5, 3))
  dk = jax.grad(lambda k: jnp.sum(cpu_kernels.conv3x3_im2col_grad(jnp.asarray(x, jnp.float32), k)
                                  * jnp.asarray(g, jnp.float32)))(jnp.asarray(k, jnp.float32))
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = np.stack([np.einsum('nhwc,nhwo->co', p[:, i:i + 7, j:j + 5], g)
                  for i in range(3) for j in range(3)]).reshape(k.shape)
  np.testing.assert_allclose(np.asarray(dk), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('shape', [(1, 8, 8, 8), (1, 16, 16, 512)],
                         ids=['few multiply-adds', 'few tiles'])
def test_cpu_forms_use_the_direct_convolution_where_winograd_does_not_pay(shape):
  # Below WINOGRAD_MIN_MACS multiply-adds or WINOGRAD_MIN_TILES output tiles:
  # the im2col-gradient form (training) or the direct convolution (inference),
  # which share their forward pass. Told apart from Winograd by rounding.
  rng = np.random.default_rng(2)
  small = jnp.asarray(rng.normal(size=shape), jnp.float32)
  k_small = jnp.asarray(rng.normal(size=(3, 3, shape[-1], shape[-1])) / shape[-1], jnp.float32)
  n, h, w, c = shape
  macs, tiles = 9 * small.size * c, n * -(-h // 4) * -(-w // 4)
  assert macs < cpu_kernels.WINOGRAD_MIN_MACS or tiles < cpu_kernels.WINOGRAD_MIN_TILES
  assert not cpu_kernels.winograd_pays(shape, c)
  direct = jax.jit(conv3x3_direct)(small, k_small)
  for form in (cpu_kernels.conv3x3_cpu_training, cpu_kernels.conv3x3_cpu_inference):
    np.testing.assert_array_equal(jax.jit(form)(small, k_small), direct)
  g = jax.grad(lambda k: jnp.sum(cpu_kernels.conv3x3_cpu_training(small, k) ** 2))(k_small)
  g_ref = jax.grad(lambda k: jnp.sum(cpu_kernels.conv3x3_im2col_grad(small, k) ** 2))(k_small)
  np.testing.assert_array_equal(g, g_ref)


def test_cpu_forms_pick_winograd_for_large_convolutions():
  rng = np.random.default_rng(2)
  big = jnp.asarray(rng.normal(size=(1, 40, 40, 96)), jnp.float32)
  k_big = jnp.asarray(rng.normal(size=(3, 3, 96, 96)), jnp.float32)
  assert 9 * big.size * 96 >= cpu_kernels.WINOGRAD_MIN_MACS and 100 >= cpu_kernels.WINOGRAD_MIN_TILES
  assert cpu_kernels.winograd_pays(big.shape, 96)
  wino = jax.jit(cpu_kernels.conv3x3_winograd)(big, k_big)
  for form in (cpu_kernels.conv3x3_cpu_training, cpu_kernels.conv3x3_cpu_inference):
    np.testing.assert_array_equal(jax.jit(form)(big, k_big), wino)


@pytest.mark.parametrize('shape', [(2, 5, 6, 7), (3, 40)], ids=['rows > channels', 'rows < channels'])
def test_channel_matmul_values_and_gradients_match_float64(shape):
  # Both of channel_matmul's gradients (its own where the rows outnumber the
  # channels, JAX's otherwise) against the float64 products.
  rng = np.random.default_rng(4)
  x = rng.normal(size=shape)
  k = rng.normal(size=(shape[-1], 9))
  g = rng.normal(size=shape[:-1] + (9,))
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  y, vjp = jax.vjp(cpu_kernels.channel_matmul, f32(x), f32(k))
  dx, dk = vjp(f32(g))
  np.testing.assert_allclose(y, x @ k, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, g @ k.T, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dk, x.reshape(-1, shape[-1]).T @ g.reshape(-1, 9), rtol=1e-5, atol=1e-4)
