"""Semantic Mask Head (paper Sec. 3.2.2, Fig. 4).

RoI feature 14x14 -> 4 x conv3x3 -> deconv x2 -> 28x28 visual map ``O`` ->
encoder ``E`` -> D-channel semantic map; per-pixel logits are dot products with
``[v_b; W]`` (the fixed ``W``-Conv). The decoder ``D`` maps the semantic map
back to ``O`` for the reconstruction loss (training only).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from zsi_jax.modeling.layers import Conv3x3, Linear


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
    conv_impl: how the 3x3 convolutions run (see ``layers.Conv3x3``).
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
    """Encoder ``E`` or decoder ``D``: [N, m, m, C] -> [N, m, m, out_dim]."""
    if self.encoder == '1x1':
      # A 1x1 convolution as a Dense over channels: its kernel gradient is then
      # one GEMM (the convolution form was 4x slower on XLA:CPU). Being linear,
      # it also folds what follows it (``_folded``).
      return Linear(out_dim, x.shape[-1], dtype=self.dtype, name=name)(x)
    if self.encoder == 'conv3x3':
      conv = lambda i: Conv3x3(out_dim, self.conv_impl, dtype=self.dtype, name=f'{name}_{i}')
      return conv(1)(nn.relu(conv(0)(x)))
    raise ValueError(f"mask head encoder must be '1x1' or 'conv3x3', got {self.encoder!r}")

  def _folded(self, x, then, residual):
    """Logits and reconstruction error of the 1x1 coders without the D-channel map.

    ``E`` and ``D`` are affine with nothing in between, so the logits are
    ``O . (K_E v) + b_E . v`` and ``D(E(O)) - O = O (K_E K_D - I) + (b_E K_D
    + b_D)``: one C x C matmul per pixel instead of C -> D -> C (the
    [N, 28, 28, D] semantic map is never built). The same functions of the
    same parameters, gradients included.
    x: [N, m, m, C]; then: [N, D, K] -> ([N, m, m, K], [N, m, m, C] float32 or None).
    """
    c = x.shape[-1]
    enc = Linear(self.semantic_dim, c, dtype=self.dtype, name='E')
    logits = enc(x, then)
    if not residual:
      return logits, None
    k_e, b_e = enc.affine()
    k_d, b_d = Linear(c, self.semantic_dim, dtype=self.dtype, name='D').affine()
    folded = (k_e @ k_d - jnp.eye(c, dtype=k_e.dtype)).astype(self.dtype)
    return logits, (x @ folded + (b_e @ k_d + b_d).astype(self.dtype)).astype(jnp.float32)

  @nn.compact
  def __call__(self, roi_features, roi_vectors=None, residual: bool = False):
    """Runs the head.

    Args:
      roi_features: ``[N, 14, 14, C]`` RoIAlign output.
      roi_vectors: None, or ``[N, K, D]`` word vectors per RoI (training: each
        RoI's target class; inference: the detected class, and its projected
        form).
      residual: with ``roi_vectors``, also return the reconstruction error
        (training).
    Returns:
      without ``roi_vectors``: dict with ``semantic`` [N, 28, 28, D] float32,
      ``features`` [N, 28, 28, channels] (the reconstruction target) and
      ``reconstruction`` (same shape, or None);
      with ``roi_vectors``: dict with ``logits`` [N, 28, 28, K] float32, the
      per-pixel dot products ``semantic . roi_vectors``, and with
      ``residual=True`` also ``residual`` [N, 28, 28, channels] float32,
      ``reconstruction - features`` (None without the decoder). For the 1x1
      encoder both are computed without the D-channel map (``_folded``).
    """
    x = roi_features.astype(self.dtype)
    init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
    for i in range(self.num_convs):
      x = nn.relu(Conv3x3(self.channels, self.conv_impl, kernel_init=init, dtype=self.dtype,
                          name=f'conv{i + 1}')(x))
    x = nn.relu(Deconv2x(self.channels, kernel_init=init, dtype=self.dtype, name='deconv')(x))
    if roi_vectors is not None:
      then = jnp.swapaxes(roi_vectors, 1, 2).astype(self.dtype)             # [N, D, K]
      with_residual = residual and self.use_decoder
      if self.encoder == '1x1':
        logits, res = self._folded(x, then, with_residual)
      else:
        e = self._coder(x, self.semantic_dim, 'E')
        logits = jnp.einsum('nhwd,ndk->nhwk', e, then)
        res = (self._coder(e, self.channels, 'D').astype(jnp.float32) - x.astype(jnp.float32)
               if with_residual else None)
      out = dict(logits=logits.astype(jnp.float32))
      if residual:
        out['residual'] = res
      return out
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
