"""Layers with ``nn.Conv`` / ``nn.Dense`` parameters whose arithmetic is injected.

``Conv3x3`` and ``Conv1x1`` own their parameters (the names and shapes of
``nn.Conv``'s, so checkpoints and weight conversion never depend on how a
convolution is computed) and take the computation as a function field. The
plain forms below are XLA's convolution; ``modeling/cpu_kernels.py`` holds
the CPU forms, and ``modeling/build.py`` picks one per backend and per
training or inference, once, for the whole model.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

_DN = ('NHWC', 'HWIO', 'NHWC')


def conv3x3_direct(x, kernel):
  """3x3 convolution, stride 1, zero padding 1: [N, H, W, C] x [3, 3, C, O] -> [N, H, W, O]."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN)


def conv1x1_direct(x, kernel, stride: int):
  """1x1 convolution: [N, H, W, C] x [C, O] -> [N, ceil(H/stride), ceil(W/stride), O]."""
  return jax.lax.conv_general_dilated(x, kernel.reshape((1, 1) + kernel.shape), (stride, stride),
                                      'VALID', dimension_numbers=_DN)


def conv1x1_matmul(x, kernel, stride: int, matmul=jnp.matmul):
  """``conv1x1_direct`` as ``matmul(x, kernel)`` over channels (after subsampling for a stride)."""
  if stride > 1:
    x = x[:, ::stride, ::stride]
  return matmul(x, kernel)


class Conv3x3(nn.Module):
  """3x3 convolution, stride 1, zero padding 1; parameters as ``nn.Conv``'s.

  Attributes:
    features: output channels.
    use_bias: add a bias (zeros at init).
    kernel_init: initialiser of the [3, 3, C, features] kernel.
    compute: ``(x [N, H, W, C], kernel [3, 3, C, O]) -> [N, H, W, O]``.
    dtype: computation dtype (parameters stay float32).
  """
  features: int
  use_bias: bool = True
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  compute: Callable[..., Any] = conv3x3_direct
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """[N, H, W, C] -> [N, H, W, features]."""
    kernel = self.param('kernel', self.kernel_init, (3, 3, x.shape[-1], self.features),
                        jnp.float32)
    y = self.compute(x.astype(self.dtype), kernel.astype(self.dtype))
    if not self.use_bias:
      return y
    return y + self.param('bias', nn.initializers.zeros, (self.features,),
                          jnp.float32).astype(self.dtype)


class Conv1x1(nn.Module):
  """1x1 convolution with optional stride (no padding); parameters as ``nn.Conv``'s.

  Attributes:
    features: output channels.
    stride: spatial stride.
    use_bias: add a bias (zeros at init).
    kernel_init: initialiser of the [1, 1, C, features] kernel.
    compute: ``(x [N, H, W, C], kernel [C, O], stride) -> [N, H', W', O]``.
    dtype: computation dtype (parameters stay float32).
  """
  features: int
  stride: int = 1
  use_bias: bool = True
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  compute: Callable[..., Any] = conv1x1_direct
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, then=None):
    """[N, H, W, C] -> [N, ceil(H/stride), ceil(W/stride), features].

    With ``then`` ([features, K]) returns ``self(x) @ then`` [..., K], computed
    as ``x @ (kernel @ then) + bias @ then``: the same function and gradients
    without the [..., features] intermediate when K < features.
    """
    c = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (1, 1, c, self.features), jnp.float32)
    kernel = kernel.reshape(c, self.features).astype(self.dtype)
    bias = (self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
            .astype(self.dtype) if self.use_bias else None)
    if then is not None:
      then = then.astype(self.dtype)
      kernel = kernel @ then
      bias = None if bias is None else bias @ then
    y = self.compute(x.astype(self.dtype), kernel, self.stride)
    return y if bias is None else y + bias


class Linear(nn.Module):
  """``nn.Dense`` (same parameters: ``kernel`` [C, features], ``bias``) that can
  fold a linear map applied to its output.

  ``Linear(x, then)`` is ``Dense(x) @ then`` computed as ``x @ (kernel @ then)
  + bias @ then``: the same function and gradients without the
  ``[..., features]`` intermediate when ``then`` has fewer columns than
  ``features``. The parameters are made in ``setup`` (hence ``in_features``),
  so a parent can read them with ``affine()`` and fold two such layers.

  Attributes:
    features: output width.
    in_features: input width C.
    kernel_init: as ``nn.Dense``'s (lecun normal).
    dtype: computation dtype (parameters stay float32).
  """
  features: int
  in_features: int
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  def setup(self):
    self.kernel = self.param('kernel', self.kernel_init, (self.in_features, self.features),
                             jnp.float32)
    self.bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)

  def affine(self):
    """(kernel [C, features], bias [features]), float32."""
    return self.kernel, self.bias

  def __call__(self, x, then=None):
    """Args:
      x: [N, ..., C].
      then: None, [features, K] (one map for all rows) or [N, features, K]
        (one per leading index of ``x``).
    Returns:
      [N, ..., features], or [N, ..., K] with ``then``.
    """
    x, kernel, bias = (a.astype(self.dtype) for a in (x, self.kernel, self.bias))
    if then is None:
      return x @ kernel + bias
    then = then.astype(self.dtype)
    if then.ndim == 2:
      return x @ (kernel @ then) + bias @ then
    folded = jnp.einsum('cd,ndk->nck', kernel, then)                    # [N, C, K]
    y = jnp.einsum('n...c,nck->n...k', x, folded)
    return y + (bias @ then).reshape((then.shape[0],) + (1,) * (x.ndim - 2) + (-1,))


class Deconv2x(nn.Module):
  """2x2 transposed convolution with stride 2 (the mask head's upsampling).

  The function and parameters (``kernel`` [2, 2, C, O], ``bias`` [O]) of
  ``nn.ConvTranspose(O, (2, 2), strides=(2, 2))``, written as one matmul and
  a depth-to-space reshape: the 2x2 windows do not overlap, so each input
  pixel writes its own 2x2 output patch. Its kernel gradient is then a GEMM
  (XLA:CPU runs the transposed convolution's as a generic dilated
  convolution, many times slower; docs/PERFORMANCE.md).

  Attributes:
    features: output channels O.
    matmul: ``(x [..., C], kernel [C, 4 O]) -> [..., 4 O]``.
  """
  features: int
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  matmul: Callable[..., Any] = jnp.matmul
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """[N, H, W, C] -> [N, 2H, 2W, O]."""
    n, h, w, c = x.shape
    kernel = self.param('kernel', self.kernel_init, (2, 2, c, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    # nn.ConvTranspose (transpose_kernel=False) correlates the stride-dilated
    # input with the kernel, so output offset (a, b) of a patch uses kernel[1-a, 1-b].
    patch_kernel = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c, 4 * self.features)
    y = self.matmul(x.astype(self.dtype), patch_kernel.astype(self.dtype))   # [N, H, W, (a, b, O)]
    y = y.reshape(n, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(self.dtype)
