"""Semantic Mask Head (paper Sec. 3.2.2, Fig. 4).

RoI feature 14x14 -> 4 x conv3x3 -> deconv x2 -> 28x28 visual map ``O`` ->
encoder ``E`` -> D-channel semantic map; per-pixel logits are dot products with
``[v_b; W]`` (the fixed ``W``-Conv). The decoder ``D`` maps the semantic map
back to ``O`` for the reconstruction loss (training only).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def _resolve_impl(impl: str) -> str:
  if impl == 'auto':
    return 'gemm' if jax.default_backend() == 'cpu' else 'conv'
  if impl not in ('conv', 'gemm'):
    raise ValueError(f"mask head conv_impl must be 'auto', 'conv' or 'gemm', got {impl!r}")
  return impl


def im2col3x3(x):
  """[N, H, W, C] -> [N, H, W, 9C]: each pixel's 3x3 neighbourhood (zero padded),
  ordered (dy, dx, c) like a [3, 3, C, O] kernel."""
  h, w = x.shape[1:3]
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return jnp.concatenate([p[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)


class Conv3x3(nn.Module):
  """3x3 convolution, stride 1, zero padding 1; parameters as ``nn.Conv``'s.

  ``impl='gemm'`` computes it as im2col and one matmul. XLA:CPU runs
  convolutions inside the branches of a ``lax.switch`` (the mask-RoI buckets
  of ZSIModel.losses) with a generic loop about 100x slower than its
  convolution library; matmuls keep their speed there, and im2col forward +
  backward was also faster than the convolution outside a switch (0.43 vs
  0.72 s for 128 RoIs, 256 channels, 2 cores). GPUs and TPUs use ``'conv'``.

  Attributes:
    features: output channels.
    impl: 'auto' (gemm on CPU, conv elsewhere), 'conv' or 'gemm'.
  """
  features: int
  impl: str = 'auto'
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """[N, H, W, C] -> [N, H, W, features]."""
    c = x.shape[-1]
    kernel = self.param('kernel', self.kernel_init, (3, 3, c, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if _resolve_impl(self.impl) == 'gemm':
      y = im2col3x3(x) @ kernel.reshape(9 * c, self.features)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return y + bias.astype(self.dtype)


class Deconv2x(nn.Module):
  """2x2 transposed convolution with stride 2 (the mask head's upsampling).

  The same function and parameters (``kernel`` [2, 2, C, O], ``bias`` [O]) as
  ``nn.ConvTranspose(O, (2, 2), strides=(2, 2))``, written as one matmul and a
  depth-to-space reshape: the 2x2 windows do not overlap, so each input pixel
  writes its own 2x2 output patch. XLA's CPU backend computes the kernel
  gradient of the convolution form as a generic dilated convolution, which
  took 26 s of a 38 s R50 training step at 256x256 (docs/PERFORMANCE.md);
  as a matmul it is a GEMM like the rest.

  Attributes:
    features: output channels O.
  """
  features: int
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """[N, H, W, C] -> [N, 2H, 2W, O]."""
    n, h, w, c = x.shape
    kernel = self.param('kernel', self.kernel_init, (2, 2, c, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    # nn.ConvTranspose (transpose_kernel=False) correlates the stride-dilated
    # input with the kernel, so output offset (a, b) of a patch uses kernel[1-a, 1-b].
    y = jnp.einsum('nhwc,abco->nhawbo', x.astype(self.dtype), kernel[::-1, ::-1].astype(self.dtype))
    y = y.reshape(n, 2 * h, 2 * w, self.features)
    return y + bias.astype(self.dtype)


class SemanticMaskHead(nn.Module):
  """Semantic mask head.

  Attributes:
    semantic_dim: word-vector dimension D.
    num_convs: conv3x3 layers before the deconvolution (all of them applied; the
      reference code applied only the last, see REFERENCE.md).
    channels: their width.
    encoder: '1x1' (the paper: one 1x1 conv) or 'conv3x3' (the reference code:
      conv3x3 + ReLU + conv3x3).
    use_decoder: build ``D`` (Table 1, "SMH Decoder").
    conv_impl: how the 3x3 convolutions run (see :class:`Conv3x3`).
    dtype: computation dtype.
  """
  semantic_dim: int
  num_convs: int = 4
  channels: int = 256
  encoder: str = '1x1'
  use_decoder: bool = True
  conv_impl: str = 'auto'
  dtype: jnp.dtype = jnp.float32

  def _coder(self, x, out_dim, name):
    if self.encoder == '1x1':
      # A 1x1 convolution as a Dense over channels: its kernel gradient is then
      # one GEMM (the convolution form was 4x slower on XLA:CPU).
      return nn.Dense(out_dim, dtype=self.dtype, name=name)(x)
    if self.encoder == 'conv3x3':
      conv = lambda i: Conv3x3(out_dim, self.conv_impl, dtype=self.dtype, name=f'{name}_{i}')
      return conv(1)(nn.relu(conv(0)(x)))
    raise ValueError(f"mask head encoder must be '1x1' or 'conv3x3', got {self.encoder!r}")

  @nn.compact
  def __call__(self, roi_features):
    """Runs the head.

    Args:
      roi_features: ``[N, 14, 14, C]`` RoIAlign output.
    Returns:
      dict with ``semantic`` [N, 28, 28, D] float32, ``features`` [N, 28, 28,
      channels] (the reconstruction target) and ``reconstruction`` (same shape,
      or None).
    """
    x = roi_features.astype(self.dtype)
    init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
    for i in range(self.num_convs):
      x = nn.relu(Conv3x3(self.channels, self.conv_impl, kernel_init=init, dtype=self.dtype,
                          name=f'conv{i + 1}')(x))
    x = nn.relu(Deconv2x(self.channels, kernel_init=init, dtype=self.dtype, name='deconv')(x))
    e = self._coder(x, self.semantic_dim, 'E')
    reconstruction = None
    if self.use_decoder:
      reconstruction = self._coder(e, self.channels, 'D').astype(jnp.float32)
    return dict(semantic=e.astype(jnp.float32), features=x.astype(jnp.float32),
                reconstruction=reconstruction)


def mask_logits(semantic, class_matrix):
  """Per-pixel logits against shared word vectors (the fixed ``W``-Conv).

  Args:
    semantic: ``[N, m, m, D]`` semantic maps.
    class_matrix: ``[K, D]`` word vectors, e.g. ``[v_b; W]``.
  Returns:
    ``[N, m, m, K]`` logits.
  """
  return jnp.einsum('nhwd,kd->nhwk', semantic, class_matrix)


def mask_logits_per_roi(semantic, roi_vectors):
  """Per-pixel logits against one word vector per RoI (its target class).

  Training needs only the ground-truth class channel, so this avoids the
  ``[N, m, m, K]`` tensor.

  Args:
    semantic: ``[N, m, m, D]`` semantic maps.
    roi_vectors: ``[N, D]``.
  Returns:
    ``[N, m, m]`` logits.
  """
  return jnp.einsum('nhwd,nd->nhw', semantic, roi_vectors)
