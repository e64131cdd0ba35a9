"""Background-Aware RPN (paper Sec. 3.2.3, Fig. 5).

The BA-RPN replaces the RPN's objectness classifier by a visual-semantic one:
shared conv3x3 -> ``T`` (1x1 conv to the word-vector dimension D) -> dot
products with learned word vectors ``W_bf`` (one background and one foreground
vector per anchor shape, no bias). The background rows are the learned
background word vector: their mean is ``v_b``, which Sync-bg hands to the box
and mask heads as a value inside the same ``apply``.

With ``semantic=False`` it is a plain RPN (Table 5, "RPN"): a 1x1 conv to two
logits per anchor, and ``v_b`` is the dataset's fixed background vector.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsi_jax.modeling.layers import Conv1x1, Conv3x3


class BackgroundAwareRPN(nn.Module):
  """BA-RPN head shared over FPN levels.

  Attributes:
    background_init: the dataset's background word vector ``[D]`` (a tuple, so
      the module stays hashable); the background rows of ``W_bf`` start here.
    num_anchors: anchors per location (A).
    channels: width of the shared conv3x3.
    semantic: BA-RPN (True) or a plain RPN (False).
    conv_impl: how the convolutions run (``layers.Conv1x1``, ``layers.Conv3x3``).
    dtype: computation dtype.
  """
  background_init: Sequence[float]
  num_anchors: int = 3
  channels: int = 256
  semantic: bool = True
  conv_impl: str = 'auto'
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    init = nn.initializers.normal(0.01)
    self.conv = Conv3x3(self.channels, self.conv_impl, kernel_init=init, dtype=self.dtype,
                        name='conv')
    conv1x1 = lambda n, name: Conv1x1(n, impl=self.conv_impl, kernel_init=init, dtype=self.dtype,
                                      name=name)
    self.box_deltas = conv1x1(4 * self.num_anchors, 'box_deltas')
    dim = len(self.background_init)
    if self.semantic:
      # T: visual features -> semantic space.
      self.semantic_projection = conv1x1(dim, 'T')

      def w_bf_init(key, shape, dtype=jnp.float32):
        # Background rows = the text background vector; foreground rows random,
        # at the scale of the class vectors so both start comparable.
        bg = jnp.broadcast_to(jnp.asarray(self.background_init, dtype), shape[:1] + shape[2:])
        norm = jnp.linalg.norm(jnp.asarray(self.background_init, dtype))
        fg = jax.random.normal(key, bg.shape, dtype)
        fg = fg / jnp.linalg.norm(fg, axis=-1, keepdims=True) * jnp.maximum(norm, 1e-3)
        return jnp.stack([bg, fg], axis=1)

      # [A, 2, D]: per anchor shape a background (index 0) and a foreground word vector.
      self.word_vectors = self.param('W_bf', w_bf_init, (self.num_anchors, 2, dim))
    else:
      self.objectness = conv1x1(2 * self.num_anchors, 'objectness')

  def background_vector(self):
    """The background word vector ``v_b`` [D] float32 (learned or fixed)."""
    if self.semantic:
      return jnp.mean(self.word_vectors[:, 0, :], axis=0).astype(jnp.float32)
    return jnp.asarray(self.background_init, jnp.float32)

  def __call__(self, features):
    """Scores anchors on every level.

    Args:
      features: list of FPN maps ``[B, H_l, W_l, C]``.
    Returns:
      logits: list of ``[B, H_l*W_l*A, 2]`` (background, foreground) logits.
      deltas: list of ``[B, H_l*W_l*A, 4]`` box deltas.
      v_b: ``[D]`` background word vector.
    """
    logits, deltas = [], []
    for x in features:
      b = x.shape[0]
      h = nn.relu(self.conv(x))
      if self.semantic:
        # Plain dot products of T(h) with W_bf: no normalisation, no temperature
        # (REFERENCE.md). Being linear, T and W_bf fold into one [C, 2A] matrix,
        # which spares the [B, H, W, D] projection (D = 300 > 2A = 6).
        w = self.word_vectors.reshape(-1, self.word_vectors.shape[-1])           # [A*2, D]
        lg = self.semantic_projection(h, then=w.T)                               # [B,H,W,A*2]
      else:
        lg = self.objectness(h)
      logits.append(lg.reshape(b, -1, 2).astype(jnp.float32))
      deltas.append(self.box_deltas(h).reshape(b, -1, 4).astype(jnp.float32))
    return logits, deltas, self.background_vector()
