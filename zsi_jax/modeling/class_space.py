"""The class space a head compares its semantic vectors with: ``[v_b; W]``.

Row 0 is the background vector ``v_b``, row ``k + 1`` class ``k`` of the
class list (padded to a fixed ``K`` with a validity mask, so any list reuses
the compiled function). Two ways to score classes at test time:

- ``'direct'`` (the paper): softmax over ``s . [v_b; W]``.
- ``'projected'`` (the authors' code, docs/REFERENCE_NOTES.md): softmax over
  the seen classes ``[v_b; W_s]``, the probabilities mapped back into word
  space and compared with the targets, ``p . [v_b; W_s] . w``, without
  renormalising. A target that is itself a seen class (GZSI) keeps its own
  softmax probability: through the projection every background RoI would
  score every class ``p_bg (v_b . w)``, and with one-hot vectors those
  detections alone filled the top 100.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

# Logit of padded (invalid) class slots: far below any real score, finite so
# that softmax and its gradient stay NaN-free.
INVALID_LOGIT = -1e9

SCORINGS = ('direct', 'projected')


def class_matrix(v_b, class_vectors, class_valid):
  """``[v_b; W]`` and its validity. v_b: [D]; class_vectors: [K, D] -> [1+K, D], [1+K]."""
  mat = jnp.concatenate([v_b[None, :].astype(class_vectors.dtype), class_vectors], axis=0)
  valid = jnp.concatenate([jnp.ones((1,), bool), class_valid.astype(bool)])
  return mat, valid


def masked_logits(semantic, matrix, valid):
  """Dot-product logits with padded classes pushed far down. [..., D] x [C, D] -> [..., C]."""
  return jnp.where(valid, semantic @ matrix.T, INVALID_LOGIT)


def project_through_seen(semantic, seen_matrix, seen_valid):
  """``s -> (s . W_s^T) . W_s`` (the authors' unseen masks), softmax-free. [..., D] -> [..., D]."""
  ws = jnp.where(seen_valid[:, None], seen_matrix, 0.0)
  return (semantic @ ws.T) @ ws


def seen_target_matrix(matrix, valid, seen_matrix, seen_valid):
  """Which target classes are seen classes: ``[K+1, S+1]`` bool.

  ``same[t, s]``: target t has exactly seen class s's vector (background rows
  never match).
  """
  same = jnp.all(matrix[:, None, :] == seen_matrix[None, :, :], axis=-1)
  same &= valid[:, None] & seen_valid[None, :]
  return same.at[0, :].set(False).at[:, 0].set(False)


class ClassSpace(NamedTuple):
  """``[v_b; W]`` as one head sees it, and ``[v_b; W_s]`` for projected scoring.

  matrix: [1+K, D]; valid: [1+K] bool; seen_matrix: [1+S, D] or None;
  seen_valid: [1+S] bool or None.
  """
  matrix: jnp.ndarray
  valid: jnp.ndarray
  seen_matrix: Optional[jnp.ndarray] = None
  seen_valid: Optional[jnp.ndarray] = None

  @classmethod
  def build(cls, v_b, class_vectors, class_valid, seen_vectors=None, seen_valid=None):
    """The space of ``v_b`` [D] and the padded ``class_vectors`` [K, D] (+ seen [S, D])."""
    matrix, valid = class_matrix(v_b, class_vectors, class_valid)
    if seen_vectors is None:
      return cls(matrix, valid)
    return cls(matrix, valid, *class_matrix(v_b, seen_vectors, seen_valid))

  def logits(self, semantic):
    """[..., D] -> [..., 1+K] logits, background first, padded classes far down."""
    return masked_logits(semantic, self.matrix, self.valid)

  def rows(self, labels):
    """Head labels (0 background, k+1 class k; -1 taken as 0) [...] -> vectors [..., D]."""
    return self.matrix[jnp.clip(labels, 0, None)]

  def _seen(self, scoring):
    if scoring not in SCORINGS:
      raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")
    if scoring == 'projected' and self.seen_matrix is None:
      raise ValueError("scoring='projected' needs the seen (training) class vectors")
    return scoring == 'projected'

  def is_seen(self):
    """[1+K] bool: the target is one of the seen classes (never the background)."""
    same = seen_target_matrix(self.matrix, self.valid, self.seen_matrix, self.seen_valid)
    return jnp.any(same, axis=1)

  def scores(self, semantic, scoring: str):
    """Per-class scores without the background, [..., D] -> [..., K]."""
    if not self._seen(scoring):
      return jax.nn.softmax(self.logits(semantic), axis=-1)[..., 1:]
    p = jax.nn.softmax(masked_logits(semantic, self.seen_matrix, self.seen_valid), axis=-1)
    ws = jnp.where(self.seen_valid[:, None], self.seen_matrix, 0.0)
    scores = (p @ ws) @ self.matrix.T
    same = seen_target_matrix(self.matrix, self.valid, self.seen_matrix, self.seen_valid)
    scores = jnp.where(jnp.any(same, axis=1), p @ same.T.astype(p.dtype), scores)
    return jnp.where(self.valid, scores, 0.0)[..., 1:]

  def calibrate(self, scores, seen_calibration):
    """Calibrated stacking (Chao et al., ECCV 2016) of per-class scores [..., K].

    Lowers every seen target class's score by ``gamma`` = ``seen_calibration``
    (a negative gamma lowers the unseen ones by ``-gamma`` instead: the same
    ranking of seen against unseen, and scores stay at most 1, so the score
    threshold removes one group entirely at |gamma| >= 1). It acts on the final
    scores (probabilities under direct scoring), before the score threshold,
    per-class NMS and the top-k, so each class's own ranking is untouched and
    only the competition between the groups moves; applied to logits it would
    pass through the softmax and change every class's score. It applies only
    when the list holds both seen and unseen classes (GZSI); gamma 0, a
    ZSI list or a space without seen vectors leave the scores as they are.
    """
    if self.seen_matrix is None:
      return scores
    seen = self.is_seen()[1:]
    unseen = self.valid[1:] & ~seen
    mixed = jnp.any(seen) & jnp.any(unseen)
    gamma = jnp.where(mixed, jnp.asarray(seen_calibration, scores.dtype), 0.0)
    return scores - jnp.where(seen, jnp.maximum(gamma, 0.0), jnp.maximum(-gamma, 0.0))

  def mask_vectors(self, classes, scoring: str):
    """The vector each detection's mask compares pixels with. classes: [...] (0..K-1) -> [..., D].

    Projected scoring maps an unseen class's vector through the seen ones:
    ``(e W_s^T W_s) . v = e . (v W_s^T W_s)`` (the map is symmetric). A seen
    target keeps the direct comparison it was trained with.
    """
    labels = jnp.clip(classes, 0, None) + 1
    vectors = self.matrix[labels]
    if not self._seen(scoring):
      return vectors
    projected = project_through_seen(vectors, self.seen_matrix, self.seen_valid)
    return jnp.where(self.is_seen()[labels][..., None], vectors, projected)
