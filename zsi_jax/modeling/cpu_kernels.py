"""3x3 convolutions for XLA:CPU: the same function as ``layers.conv3x3_direct``.

XLA's CPU backend runs a convolution's kernel gradient as a generic loop, far
below its GEMM rate, and its direct forward pass below the rate of a GEMM of
the same size. Two forms fix that (docs/PERFORMANCE.md has the measurements):

- :func:`conv3x3_winograd`: Winograd's F(4x4, 3x3), 36 GEMMs over channels
  with a quarter of the direct multiply-adds, forward and backward.
- :func:`conv3x3_im2col_grad`: XLA's convolution forward and for the input
  gradient, nine GEMMs for the kernel gradient; for convolutions too small
  for Winograd to pay.

Matmuls over channels (1x1 convolutions, the mask head's deconvolution and
folded coder) go through :func:`channel_matmul`, whose kernel gradient is one
GEMM over every position.

``modeling/build.py`` chooses between them (:func:`conv3x3_cpu_training`,
:func:`conv3x3_cpu_inference`) and hands the choice to the layers; every form
is tested equal to the direct one.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from zsi_jax.modeling.layers import conv1x1_matmul, conv3x3_direct

# Winograd from this many direct multiply-adds per call (N*H*W*9*C*O) up. Below
# it Winograd saves well under a millisecond per call, while each such layer
# adds 0.5-1 s of XLA compilation (forward + backward).
WINOGRAD_MIN_MACS = 10**8
# ... and from this many 4x4 output tiles per call (N * ceil(H/4) * ceil(W/4))
# up: the kernel's transform and its gradient cost the same whatever the
# tiles, and with fewer the direct form is faster (docs/PERFORMANCE.md). In
# the R50-FPN at 512x512, batch 2, that leaves C5's and P5's convolutions to it.
WINOGRAD_MIN_TILES = 64


@jax.custom_vjp
def _matmul_rows_grad(x, kernel):
  """x [..., C] @ kernel [C, O] -> [..., O] whose kernel gradient is one 2-D
  GEMM over the rows of x: XLA:CPU then transposes its [C, O] result, where from
  JAX's own gradient it writes the [rows, O] output gradient transposed."""
  return x @ kernel


def _matmul_rows_grad_fwd(x, kernel):
  return x @ kernel, (x, kernel)


def _matmul_rows_grad_bwd(res, g):
  x, kernel = res
  rows = lambda a: a.reshape(-1, a.shape[-1])
  dk = jax.lax.dot_general(rows(x), rows(g), (((0,), (0,)), ((), ())))
  return g @ kernel.T, dk.astype(kernel.dtype)


_matmul_rows_grad.defvjp(_matmul_rows_grad_fwd, _matmul_rows_grad_bwd)


def channel_matmul(x, kernel):
  """``x @ kernel`` over channels for XLA:CPU: x [..., C], kernel [C, O] -> [..., O].

  Where x has more rows than channels (every convolution-like use), the kernel
  gradient of :func:`_matmul_rows_grad`: transposing the [C, O] result is then
  cheaper than transposing the [rows, O] output gradient. Otherwise (a fully
  connected layer on few RoIs) JAX's own.
  """
  if x.size // x.shape[-1] > x.shape[-1]:
    return _matmul_rows_grad(x, kernel)
  return x @ kernel


def conv1x1_cpu(x, kernel, stride: int):
  """``layers.conv1x1_matmul`` by :func:`channel_matmul`.

  x: [N, H, W, C], kernel: [C, O] -> [N, ceil(H/stride), ceil(W/stride), O].
  """
  return conv1x1_matmul(x, kernel, stride, matmul=channel_matmul)


@jax.custom_vjp
def conv3x3_im2col_grad(x, kernel):
  """3x3 convolution whose kernel gradient is nine GEMMs on shifted views of ``x``.

  The forward pass and the input gradient (a convolution with the flipped,
  transposed kernel) are XLA's convolution. Only ``x`` is kept for the
  backward pass, not its 9x larger im2col.

  x: [N, H, W, C], kernel: [3, 3, C, O] -> [N, H, W, O].
  """
  return conv3x3_direct(x, kernel)


def _im2col_grad_fwd(x, kernel):
  return conv3x3_direct(x, kernel), (x, kernel)


def _im2col_grad_bwd(res, g):
  x, kernel = res
  h, w, c = x.shape[1:]
  o = kernel.shape[3]
  dx = conv3x3_direct(g, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  # dk[i, j] = shift_ij(x)^T g, one GEMM per tap: XLA:CPU would first write
  # a concatenated im2col out in full (9x the input).
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  g2 = g.reshape(-1, o)
  dk = jnp.stack([p[:, i:i + h, j:j + w].reshape(-1, c).T @ g2
                  for i in range(3) for j in range(3)])
  return dx, dk.reshape(kernel.shape).astype(kernel.dtype)


conv3x3_im2col_grad.defvjp(_im2col_grad_fwd, _im2col_grad_bwd)


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
_WINO_GG = np.kron(_WINO_G, _WINO_G)     # [36, 9]: (G k G^T)[a, b] = sum_ij G[a, i] G[b, j] k[i, j]


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _tiles(x, axis: int, count: int):
  """The six taps of ``count`` overlapping 6-wide windows at stride 4 along
  ``axis``: a tuple of six arrays with ``count`` entries on that axis.

  Its gradient is written out as the windows' overlap-add (below): JAX's own,
  six zero-padded full-size copies summed, costs several passes over the input.
  """
  m = _WINO_OUT
  return tuple(jax.lax.slice_in_dim(x, j, j + m * (count - 1) + 1, m, axis)
               for j in range(m + 2))


def _tiles_fwd(x, axis, count):
  return _tiles(x, axis, count), None


def _tiles_bwd(axis, count, _, taps):
  """Overlap-add: input position ``4t + k`` collects tap ``k`` of window ``t``
  and, for k < 2, tap ``k + 4`` of window ``t - 1``.

  taps: six arrays with ``count`` entries on ``axis`` -> one with ``4 count + 2``.
  """
  m = _WINO_OUT
  def interleave(parts):         # [..., count, ...] x len(parts) -> [..., count * len(parts), ...]
    y = jnp.stack(parts, axis=axis + 1)
    return y.reshape(y.shape[:axis] + (-1,) + y.shape[axis + 2:])
  def pad(y, before, after):
    widths = [(0, 0)] * y.ndim
    widths[axis] = (before, after)
    return jnp.pad(y, widths)
  own = pad(interleave(taps[:m]), 0, 2)                               # positions 0 .. 4 count - 1
  carried = interleave([taps[m], taps[m + 1]] + [jnp.zeros_like(taps[m])] * (m - 2))
  carried = pad(jax.lax.slice_in_dim(carried, 0, m * count - 2, axis=axis), m, 0)   # 4 .. 4 count + 1
  return (own + carried,)


_tiles.defvjp(_tiles_fwd, _tiles_bwd)


def conv3x3_winograd(x, kernel):
  """3x3 convolution (stride 1, padding 1) by Winograd's F(4x4, 3x3).

  The image is cut into 6x6 tiles at stride 4 (each gives a 4x4 output
  tile), tiles and kernel are transformed, and the 36 tile positions are 36
  independent GEMMs over channels, ``[N*T, C] @ [C, O]``; the transforms are
  linear, so JAX differentiates through them and the gradients are GEMMs of
  the same size. It always computes in float32 and rounds differently from
  a direct convolution, by about 1e-5 of the output's magnitude (the
  transforms scale by up to 8).

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
  # G k G^T for every channel pair as one GEMM over the flattened pairs.
  u = (_WINO_GG @ kernel.astype(jnp.float32).reshape(9, c * o)).reshape(m + 2, m + 2, c, o)
  y = jnp.einsum('batc,abco->abto', v, u)                   # [6r, 6c, N*T, O]
  y = _combine(_WINO_AT, list(y))                           # [4p, 6c, N*T, O]
  y = _combine(_WINO_AT, [y[:, j] for j in range(m + 2)])   # [4q, 4p, N*T, O]
  y = y.reshape(m, m, n, th, tw, o).transpose(2, 3, 1, 4, 0, 5).reshape(n, m * th, m * tw, o)
  return y[:, :h, :w].astype(dtype)


def winograd_pays(x_shape, out_channels: int) -> bool:
  """Whether a 3x3 convolution of x [N, H, W, C] to ``out_channels`` is large
  enough for Winograd: ``WINOGRAD_MIN_MACS`` and ``WINOGRAD_MIN_TILES``."""
  n, h, w, c = x_shape
  tiles = n * -(-h // _WINO_OUT) * -(-w // _WINO_OUT)
  return 9 * n * h * w * c * out_channels >= WINOGRAD_MIN_MACS and tiles >= WINOGRAD_MIN_TILES


def _winograd_when_large(x, kernel, small):
  large = winograd_pays(x.shape, kernel.shape[-1])
  return conv3x3_winograd(x, kernel) if large else small(x, kernel)


def conv3x3_cpu_training(x, kernel):
  """The CPU's 3x3 convolution for training: Winograd where :func:`winograd_pays`,
  else :func:`conv3x3_im2col_grad` (a static choice per call site).

  x: [N, H, W, C], kernel: [3, 3, C, O] -> [N, H, W, O].
  """
  return _winograd_when_large(x, kernel, conv3x3_im2col_grad)


def conv3x3_cpu_inference(x, kernel):
  """The CPU's 3x3 convolution for a forward-only call: Winograd where
  :func:`winograd_pays`, else XLA's direct convolution (the forward pass of
  :func:`conv3x3_im2col_grad`, without its custom gradient).

  x: [N, H, W, C], kernel: [3, 3, C, O] -> [N, H, W, O].
  """
  return _winograd_when_large(x, kernel, conv3x3_direct)
