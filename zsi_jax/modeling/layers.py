"""Layers shared by the heads."""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


IMPLS = ('conv', 'gemm', 'mixed', 'winograd')


# 'auto' on the CPU computes a 3x3 convolution by Winograd from this many
# direct multiply-adds per call (N*H*W*9*C*O) up. Below it Winograd saves
# well under a millisecond per call while each such layer adds 0.5-1 s of
# XLA compilation (forward + backward, measured), which small models such
# as the test suite's would pay many times over for nothing. Every 3x3
# convolution of the R50-FPN configuration at 512x512 (batch 1 or more) is
# above it but the RPN's on P6; 'mixed' does the rest.
WINOGRAD_MIN_MACS = 10**8


def resolve_conv_impl(impl: str, macs: int | None = None) -> str:
  """``'conv'``, ``'gemm'``, ``'mixed'`` or ``'winograd'`` for a ``model.conv_impl`` setting.

  ``'auto'`` is ``'conv'`` on GPUs and TPUs. On the CPU it is
  ``'winograd'`` (see ``Conv3x3`` and ``Conv1x1``: 3x3 convolutions by
  Winograd's F(4x4, 3x3), 1x1 as matmuls, the fastest forms there, forward
  and backward), except for 3x3 convolutions of fewer than
  ``WINOGRAD_MIN_MACS`` multiply-adds (``macs``, when the caller knows it),
  which are ``'mixed'``.
  """
  if impl == 'auto':
    if jax.default_backend() != 'cpu':
      return 'conv'
    return 'mixed' if macs is not None and macs < WINOGRAD_MIN_MACS else 'winograd'
  if impl not in IMPLS:
    raise ValueError(f"conv_impl must be 'auto' or one of {IMPLS}, got {impl!r}")
  return impl


_DN = ('NHWC', 'HWIO', 'NHWC')


def _conv3x3(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_DN)


@jax.custom_vjp
def conv3x3_mixed(x, kernel):
  """3x3 convolution (stride 1, padding 1) whose kernel gradient is an im2col GEMM.

  The forward pass and the input gradient (a convolution with the flipped,
  transposed kernel) use XLA's convolution; the kernel gradient, which
  XLA:CPU runs as a slow generic convolution, is ``im2col(x)^T g`` (as nine
  GEMMs on shifted views of ``x``). Only ``x`` is kept for the backward pass
  (not its 9x larger im2col).

  x: [N, H, W, C], kernel: [3, 3, C, O] -> [N, H, W, O].
  """
  return _conv3x3(x, kernel)


def _mixed_fwd(x, kernel):
  return _conv3x3(x, kernel), (x, kernel)


def _mixed_bwd(res, g):
  x, kernel = res
  h, w, c = x.shape[1:]
  o = kernel.shape[3]
  dx = _conv3x3(g, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  # dk[i, j] = shift_ij(x)^T g: nine GEMMs on shifted views of the padded
  # input rather than one on its concatenated im2col, which XLA:CPU would
  # first write out in full (9x the input; P2: 0.30 vs 0.37 s).
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  g2 = g.reshape(-1, o)
  dk = jnp.stack([p[:, i:i + h, j:j + w].reshape(-1, c).T @ g2
                  for i in range(3) for j in range(3)])
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


conv3x3_mixed.defvjp(_mixed_fwd, _mixed_bwd)


# Winograd F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
# Neural Networks", 2016), interpolation points 0, 1, -1, 2, -2 and infinity:
# a 6x6 input tile d gives the 4x4 output tile AT [(G k G^T) * (BT d B)] A,
# 36 multiplications per channel pair instead of 144.
_WINO_BT = np.array([[4, 0, -5, 0, 1, 0],
                     [0, -4, -4, 1, 1, 0],
                     [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0],
                     [0, 2, -1, -2, 1, 0],
                     [0, 4, 0, -5, 0, 1]], np.float32)               # [6, 6] input
_WINO_G = np.array([[1 / 4, 0, 0],
                    [-1 / 6, -1 / 6, -1 / 6],
                    [-1 / 6, 1 / 6, -1 / 6],
                    [1 / 24, 1 / 12, 1 / 6],
                    [1 / 24, -1 / 12, 1 / 6],
                    [0, 0, 1]], np.float32)                          # [6, 3] kernel
_WINO_AT = np.array([[1, 1, 1, 1, 1, 0],
                     [0, 1, -1, 2, -2, 0],
                     [0, 1, 1, 4, 4, 0],
                     [0, 1, -1, 8, -8, 1]], np.float32)              # [4, 6] output
_WINO_OUT = 4


def _combine(matrix, parts):
  """``matrix @ stack(parts)`` as sums of scaled parts, skipping zero
  coefficients, so that XLA fuses each transform into one elementwise pass.

  matrix: [R, P] constants; parts: P arrays of one shape -> [R, *shape].
  """
  rows = []
  for coefs in matrix:
    terms = [p if c == 1 else -p if c == -1 else p * float(c)
             for c, p in zip(coefs, parts) if c != 0]
    rows.append(sum(terms[1:], terms[0]))
  return jnp.stack(rows)


def _tiles(x, axis: int, count: int):
  """The six taps of ``count`` overlapping 6-wide windows at stride 4 along
  ``axis``: a list of six arrays with ``count`` entries on that axis."""
  m = _WINO_OUT
  return [jax.lax.slice_in_dim(x, j, j + m * (count - 1) + 1, m, axis) for j in range(m + 2)]


def conv3x3_winograd(x, kernel):
  """3x3 convolution (stride 1, padding 1) by Winograd's F(4x4, 3x3).

  The image is cut into 6x6 tiles at stride 4 (each gives a 4x4 output
  tile), tiles and kernel are transformed, and the 36 tile positions are 36
  independent GEMMs over channels, ``[N*T, C] @ [C, O]``: a quarter of the
  direct convolution's multiply-adds, and plain dots in the backward pass
  too (the transforms are linear, so JAX differentiates through them). On
  XLA:CPU this is 1.8-2x faster than the convolution's forward + backward
  (mask head [200, 14, 14, 256]: 0.78 vs 1.35-1.44 s; P2 [2, 128, 128, 256]:
  0.48 vs 0.96 s; ``benchmarks/bench_conv3x3.py``, docs/PERFORMANCE.md). Its
  rounding differs from a direct convolution by about 1e-5 of the output's
  magnitude in float32 (the transforms scale by up to 8); it always computes
  in float32.

  x: [N, H, W, C], kernel: [3, 3, C, O] -> [N, H, W, O] in x's dtype.
  """
  n, h, w, c = x.shape
  o = kernel.shape[-1]
  dtype = x.dtype
  m = _WINO_OUT
  th, tw = -(-h // m), -(-w // m)
  # One zero pixel before (the convolution's padding), enough after to fill
  # whole tiles; the surplus outputs are cropped.
  x = jnp.pad(x.astype(jnp.float32), ((0, 0), (1, m * th + 1 - h), (1, m * tw + 1 - w), (0, 0)))
  v = _combine(_WINO_BT, _tiles(x, 1, th))                  # [6r, N, th, W', C]
  v = _combine(_WINO_BT, _tiles(v, 3, tw))                  # [6c, 6r, N, th, tw, C]
  v = v.reshape(m + 2, m + 2, n * th * tw, c)
  g = jnp.asarray(_WINO_G)
  u = jnp.einsum('ai,ijco,bj->abco', g, kernel.astype(jnp.float32), g)   # [6r, 6c, C, O]
  y = jnp.einsum('batc,abco->abto', v, u)                   # [6r, 6c, N*T, O]
  y = _combine(_WINO_AT, list(y))                           # [4p, 6c, N*T, O]
  y = _combine(_WINO_AT, [y[:, j] for j in range(m + 2)])   # [4q, 4p, N*T, O]
  y = y.reshape(m, m, n, th, tw, o).transpose(2, 3, 1, 4, 0, 5).reshape(n, m * th, m * tw, o)
  return y[:, :h, :w].astype(dtype)


def im2col3x3(x):
  """[N, H, W, C] -> [N, H, W, 9C]: each pixel's 3x3 neighbourhood (zero padded),
  ordered (dy, dx, c) like a [3, 3, C, O] kernel."""
  h, w = x.shape[1:3]
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)


class _Conv(nn.Module):
  """Fields and parameters shared by Conv3x3 and Conv1x1 (``nn.Conv``'s names
  and shapes, so checkpoints and weight conversion do not depend on ``impl``)."""
  features: int
  impl: str = 'auto'
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  def _kernel(self, x, size: int):
    """(x, kernel [size, size, C, features]) in the computation dtype."""
    kernel = self.param('kernel', self.kernel_init, (size, size, x.shape[-1], self.features),
                        jnp.float32)
    return x.astype(self.dtype), kernel.astype(self.dtype)

  def _bias(self):
    return self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32).astype(
        self.dtype)


class Conv3x3(_Conv):
  """3x3 convolution, stride 1, zero padding 1; parameters as ``nn.Conv``'s.

  Four ways to compute it, same function and gradients (tested):
  - ``'conv'``: XLA's convolution (GPUs, TPUs, and forward-only on the CPU).
  - ``'gemm'``: im2col and one matmul, forward and backward.
  - ``'mixed'``: convolution forward and input gradient, im2col GEMM for the
    kernel gradient (:func:`conv3x3_mixed`). XLA:CPU runs the kernel gradient
    of a convolution as a generic loop: at a fraction of the GEMM rate on the
    FPN/RPN maps, and about 100x slower inside the branches of a
    ``lax.switch`` (the mask-RoI buckets of ZSIModel.losses). Measured fwd +
    bwd on 2 cores: mask head (4 convs, 64 RoIs, inside a 4-way switch) 1.44 s
    as 'gemm', 1.01 s as 'mixed'; P2 [2, 128, 128, 256] 1.03 s as 'conv',
    0.61 s 'gemm', 0.67 s 'mixed'. 'gemm' also keeps a 9x larger im2col
    buffer for the backward pass, which ``lax.switch`` then zero-fills for
    every branch not taken; and forward-only it is twice as slow as the
    convolution, which 'mixed' uses.
  - ``'winograd'``: Winograd's F(4x4, 3x3) (:func:`conv3x3_winograd`), a
    quarter of the multiply-adds as 36 GEMMs, forward and backward; the
    fastest on the CPU (end to end, 512x512 batch 2, same host, back to
    back: train step 7.28 -> 6.08 s, inference 4.03 -> 2.78 s against
    'mixed'). It rounds differently, by about 1e-5 of the output's scale.

  Attributes:
    features: output channels.
    impl: 'conv', 'gemm', 'mixed', 'winograd' or 'auto' ('winograd' on the
      CPU, 'mixed' there for small convolutions, 'conv' elsewhere;
      ``resolve_conv_impl``).
    use_bias: add a bias (zeros at init); without it the parameters are
      those of ``nn.Conv(use_bias=False)`` (the backbone's).
  """
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    """[N, H, W, C] -> [N, H, W, features]."""
    c = x.shape[-1]
    x, kernel = self._kernel(x, 3)
    impl = resolve_conv_impl(self.impl, macs=9 * math.prod(x.shape) * self.features)
    if impl == 'gemm':
      y = im2col3x3(x) @ kernel.reshape(9 * c, self.features)
    elif impl == 'winograd':
      y = conv3x3_winograd(x, kernel)
    elif impl == 'mixed':
      y = conv3x3_mixed(x, kernel)
    else:
      y = _conv3x3(x, kernel)
    return (y + self._bias()) if self.use_bias else y


class Conv1x1(_Conv):
  """1x1 convolution with optional stride (no padding); parameters as ``nn.Conv``'s.

  ``impl='gemm'`` (or 'mixed') computes it as a matmul over channels (after
  subsampling for a stride). On XLA:CPU the kernel gradient of a 1x1
  convolution is lowered to a convolution whose "batch" is the output channel,
  running at about 5 GFLOP/s: the bottleneck, downsample, FPN lateral and RPN
  projection kernel gradients were a quarter of a ResNet-50-FPN train step. As
  a matmul the kernel gradient is one ``x^T g`` GEMM, and the forward pass is
  faster too (e.g. [2, 128, 128, 256] -> 300: 45 vs 113 ms).

  Attributes (besides ``features``, ``impl``, ``kernel_init``, ``dtype``):
    stride: spatial stride (1x1 kernels need no padding; output size
      ``ceil(H / stride)`` as ``nn.Conv`` with 'SAME' or zero padding).
    use_bias: add a bias (zeros at init).
    impl: 'auto', 'conv', 'gemm', 'mixed' or 'winograd'
      (``resolve_conv_impl``); all but 'conv' are 'gemm' here (a 1x1
      convolution's forward and gradients are all matmuls).
  """
  stride: int = 1
  use_bias: bool = True

  @nn.compact
  def __call__(self, x, then=None):
    """[N, H, W, C] -> [N, ceil(H/stride), ceil(W/stride), features].

    With ``then`` ([features, K]), returns ``self(x) @ then`` [..., K] computed
    as ``x @ (kernel @ then) + bias @ then``: the same function and parameter
    gradients, without the [..., features] intermediate when K < features.
    """
    c = x.shape[-1]
    x, kernel = self._kernel(x, 1)
    kernel = kernel.reshape(c, self.features)
    bias = self._bias() if self.use_bias else None
    if then is not None:
      then = then.astype(kernel.dtype)
      kernel = kernel @ then
      bias = None if bias is None else bias @ then
    if resolve_conv_impl(self.impl) != 'conv':
      if self.stride > 1:
        x = x[:, ::self.stride, ::self.stride]
      y = x @ kernel
    else:
      y = jax.lax.conv_general_dilated(x, kernel.reshape(1, 1, *kernel.shape),
                                       (self.stride, self.stride), 'VALID',
                                       dimension_numbers=_DN)
    return y if bias is None else y + bias


class Linear(nn.Module):
  """``nn.Dense`` (same parameters: ``kernel`` [C, features], ``bias``) that can
  fold a linear map applied to its output.

  ``Linear(x, then)`` is ``Dense(x) @ then`` computed as ``x @ (kernel @ then)
  + bias @ then``: the same function and gradients, without the
  ``[..., features]`` intermediate when ``then`` has fewer columns than
  ``features`` (e.g. the mask head's 300-d encoder followed by one word vector
  per RoI). The parameters are made in ``setup`` (hence ``in_features``), so
  a parent can also read them with ``affine()`` and fold two of these layers
  into one map.

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
