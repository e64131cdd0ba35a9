"""Semantic Mask Head (paper Sec. 3.2.2, Fig. 4).

RoI feature 14x14 -> 4 x conv3x3 -> deconv x2 -> 28x28 visual map ``O`` ->
encoder ``E`` -> D-channel semantic map; per-pixel logits are dot products with
``[v_b; W]`` (the fixed ``W``-Conv). The decoder ``D`` maps the semantic map
back to ``O`` for the reconstruction loss (training only).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


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
    dtype: computation dtype.
  """
  semantic_dim: int
  num_convs: int = 4
  channels: int = 256
  encoder: str = '1x1'
  use_decoder: bool = True
  dtype: jnp.dtype = jnp.float32

  def _coder(self, x, out_dim, name):
    if self.encoder == '1x1':
      return nn.Conv(out_dim, (1, 1), dtype=self.dtype, name=name)(x)
    if self.encoder == 'conv3x3':
      x = nn.relu(nn.Conv(out_dim, (3, 3), padding=1, dtype=self.dtype, name=f'{name}_0')(x))
      return nn.Conv(out_dim, (3, 3), padding=1, dtype=self.dtype, name=f'{name}_1')(x)
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
      x = nn.relu(nn.Conv(self.channels, (3, 3), padding=1, kernel_init=init,
                          dtype=self.dtype, name=f'conv{i + 1}')(x))
    x = nn.relu(nn.ConvTranspose(self.channels, (2, 2), strides=(2, 2), kernel_init=init,
                                 dtype=self.dtype, name='deconv')(x))
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
