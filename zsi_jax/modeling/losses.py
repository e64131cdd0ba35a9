"""Loss terms of Eq. 2, averaged over valid (not padded) entries only.

Every function returns a ``(sum, count)`` pair or a normalised scalar; padded
anchors, RoIs and ground truth enter with weight 0, so they contribute nothing
to the value or to the gradient.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def safe_divide(num, den):
  """num / max(den, 1): empty sets give 0 instead of NaN."""
  return num / jnp.maximum(den, 1.0)


def softmax_cross_entropy(logits, labels, weights):
  """Weighted sum of softmax cross-entropy.

  Args:
    logits: [..., C] float.
    labels: [...] int, any value where ``weights`` is 0 (e.g. -1 for padding).
    weights: [...] float or bool.
  Returns:
    scalar sum over entries of ``weights * CE``.
  """
  w = weights.astype(jnp.float32)
  safe_labels = jnp.where(w > 0, labels, 0)
  # Zero masked rows first: a NaN there would otherwise reach the gradient
  # through log_softmax's backward pass even though its value is discarded.
  x = jnp.where((w > 0)[..., None], logits.astype(jnp.float32), 0.0)
  logp = jax.nn.log_softmax(x, axis=-1)
  nll = -jnp.take_along_axis(logp, safe_labels[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(w > 0, nll, 0.0) * w)


def smooth_l1(pred, target, beta):
  """Elementwise smooth-L1 (Huber with transition at ``beta``), [...] -> [...]."""
  d = jnp.abs(pred - target)
  if beta <= 0:
    return d
  return jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def weighted_smooth_l1(pred, target, weights, beta):
  """Sum of smooth-L1 over the last axis and all entries with weight > 0.

  Args:
    pred, target: [..., 4].
    weights: [...] float or bool.
    beta: smooth-L1 transition point.
  Returns:
    scalar.
  """
  w = weights.astype(jnp.float32)
  # Masked entries may hold garbage (e.g. deltas of padded boxes); zero them
  # before the loss so no NaN reaches the gradient through jnp.where.
  mask = (w > 0)[..., None]
  per = smooth_l1(jnp.where(mask, pred, 0.0), jnp.where(mask, target, 0.0), beta)
  return jnp.sum(jnp.sum(per, axis=-1) * w)


def sigmoid_binary_cross_entropy(logits, targets, weights):
  """Weighted sum of elementwise sigmoid BCE.

  Args:
    logits, targets: [..., m, m] float (targets in {0, 1}).
    weights: broadcastable to ``logits`` (e.g. [..., 1, 1]).
  Returns:
    scalar.
  """
  x = logits.astype(jnp.float32)
  bce = jnp.maximum(x, 0) - x * targets + jnp.log1p(jnp.exp(-jnp.abs(x)))
  w = jnp.broadcast_to(weights.astype(jnp.float32), bce.shape)
  return jnp.sum(jnp.where(w > 0, bce, 0.0) * w)


def reconstruction_mse(original, reconstruction, weights):
  """Mean squared reconstruction error over valid entries (paper Eq. 1, averaged).

  Args:
    original: [N, ...F] visual features O (not detached: docs/REFERENCE_NOTES.md).
    reconstruction: same shape, decoder output R.
    weights: [N] validity.
  Returns:
    scalar mean over valid entries and feature elements.
  """
  return residual_mse(original - reconstruction, weights)


def residual_mse(residual, weights, count=None):
  """``reconstruction_mse`` given the error ``R - O`` [N, ...F] itself; divided by
  ``count`` (default the sum of ``weights``) when these N rows are a piece of a larger set."""
  w = weights.astype(jnp.float32)
  per = jnp.mean(jnp.square(residual).reshape(residual.shape[0], -1), axis=-1)
  return safe_divide(jnp.sum(per * w), jnp.sum(w) if count is None else count)
