"""Zero-shot detector: the semantic box head (paper Sec. 3.2.1, Fig. 3).

RoI feature -> 2 x FC1024 = ``x`` -> ``T_e`` -> semantic vector ``s`` [D];
class logits are ``s . [v_b; W]^T`` against fixed word vectors. The decoder
``T_d`` maps ``s`` back to ``x`` for the reconstruction loss (training only).
"""
from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp


class SemanticBoxHead(nn.Module):
  """Semantic box head.

  Attributes:
    semantic_dim: word-vector dimension D.
    fc_dim: width of the two shared FC layers.
    use_decoder: build ``T_d`` (Table 1, "Det Decoder").
    num_reg_classes: 0 for class-agnostic box regression; otherwise the number of
      training classes, each with its own regressor (unseen classes then use
      the class-agnostic path, which is trained alongside).
    vocabulary_size: V > 0 to route ``T_e`` through a fixed vocabulary matrix
      (the reference's COCO setting); the matrix is an argument of ``__call__``.
    dtype: computation dtype.
  """
  semantic_dim: int
  fc_dim: int = 1024
  use_decoder: bool = True
  num_reg_classes: int = 0
  vocabulary_size: int = 0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, roi_features, vocabulary: Optional[jnp.ndarray] = None):
    """Runs the head on pooled RoI features.

    Args:
      roi_features: ``[..., 7, 7, C]`` RoIAlign output.
      vocabulary: ``[V, D]`` fixed vocabulary word vectors when
        ``vocabulary_size > 0``.
    Returns:
      dict with ``semantic`` [..., D] (float32), ``features`` [..., fc_dim] (the
      reconstruction target ``x``), ``reconstruction`` [..., fc_dim] or None,
      ``deltas_agnostic`` [..., 4] and ``deltas_specific`` [..., num_reg_classes, 4]
      (or None).
    """
    lead = roi_features.shape[:-3]
    x = roi_features.reshape(lead + (-1,)).astype(self.dtype)
    x = nn.relu(nn.Dense(self.fc_dim, dtype=self.dtype, name='fc1')(x))
    x = nn.relu(nn.Dense(self.fc_dim, dtype=self.dtype, name='fc2')(x))

    s = nn.Dense(self.semantic_dim, dtype=self.dtype, name='T_e')(x)
    if self.vocabulary_size:
      if vocabulary is None or vocabulary.shape[0] != self.vocabulary_size:
        raise ValueError(f'box head expects a vocabulary of {self.vocabulary_size} words, '
                         f'got {None if vocabulary is None else vocabulary.shape}')
      voc = vocabulary.astype(self.dtype)
      # Similarities to V known words, then a learned map back to word space.
      s = nn.Dense(self.semantic_dim, dtype=self.dtype, name='vocabulary_to_semantic')(s @ voc.T)

    reconstruction = None
    if self.use_decoder:
      r = s
      if self.vocabulary_size:
        r = nn.Dense(self.vocabulary_size, dtype=self.dtype, name='semantic_to_vocabulary')(r) @ voc
      reconstruction = nn.Dense(self.fc_dim, dtype=self.dtype, name='T_d')(r).astype(jnp.float32)

    init = nn.initializers.normal(0.001)
    deltas_agnostic = nn.Dense(4, kernel_init=init, dtype=self.dtype, name='box_agnostic')(x)
    deltas_specific = None
    if self.num_reg_classes:
      deltas_specific = nn.Dense(4 * self.num_reg_classes, kernel_init=init, dtype=self.dtype,
                                 name='box_specific')(x)
      deltas_specific = deltas_specific.reshape(lead + (self.num_reg_classes, 4)).astype(jnp.float32)
    return dict(semantic=s.astype(jnp.float32), features=x.astype(jnp.float32),
                reconstruction=reconstruction,
                deltas_agnostic=deltas_agnostic.astype(jnp.float32),
                deltas_specific=deltas_specific)
