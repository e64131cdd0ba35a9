"""Max-IoU matching and balanced sampling with fixed output sizes."""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def match_boxes(iou, gt_valid, positive_threshold: float, negative_threshold: float,
                allow_low_quality: bool, low_quality_min: float = 0.0):
  """Assigns each candidate (anchor or proposal) to its best ground truth.

  Rules (mmdetection MaxIoUAssigner / torchvision Matcher):
  IoU >= positive_threshold -> positive; IoU < negative_threshold -> negative;
  in between -> ignored. With ``allow_low_quality``, every ground truth also
  claims the candidates that reach its own highest IoU (if that IoU is at least
  ``low_quality_min`` and above 0), so each object gets at least one positive.
  Invalid (padded) ground truth never matches anything.

  Args:
    iou: [N, G] IoU of candidates with ground truth.
    gt_valid: [G] bool (ground truth that may be matched: real, not crowd).
  Returns:
    matched_gt: [N] int32 best ground truth per candidate (0 when G has no
      valid entry; meaningful only for positives).
    labels: [N] int32, 1 positive, 0 negative, -1 ignored.
  """
  iou = jnp.where(gt_valid[None, :], iou, -1.0)
  best = jnp.max(iou, axis=1)
  matched = jnp.argmax(iou, axis=1).astype(jnp.int32)
  labels = jnp.where(best >= positive_threshold, 1, jnp.where(best < negative_threshold, 0, -1))
  if allow_low_quality:
    gt_best = jnp.max(iou, axis=0)                                  # [G]
    claims = ((iou == gt_best[None, :]) & gt_valid[None, :]
              & (gt_best[None, :] >= low_quality_min) & (gt_best[None, :] > 0))
    low_quality = jnp.any(claims, axis=1)
    labels = jnp.where(low_quality, 1, labels)
  return matched, labels.astype(jnp.int32)


def sample_balanced(key, match_labels, num_samples: int, positive_fraction: float,
                    candidate_valid: Optional[jnp.ndarray] = None):
  """Random balanced sample of positives and negatives, fixed size.

  Takes up to ``num_samples * positive_fraction`` positives, fills the rest with
  negatives (as torchvision's BalancedPositiveNegativeSampler); slots that
  cannot be filled are empty.

  Args:
    key: PRNG key.
    match_labels: [N] int32 from :func:`match_boxes` (1, 0, -1).
    num_samples: static output size.
    positive_fraction: target fraction of positives.
    candidate_valid: optional [N] bool; invalid candidates are never sampled.
  Returns:
    indices: [num_samples] int32 (0 in empty slots).
    labels: [num_samples] int32, 1 positive, 0 negative, -1 empty slot.
  """
  ok = jnp.ones_like(match_labels, bool) if candidate_valid is None else candidate_valid
  pos = (match_labels == 1) & ok
  neg = (match_labels == 0) & ok
  max_pos = int(num_samples * positive_fraction)
  num_pos = jnp.minimum(jnp.sum(pos), max_pos)
  num_neg = jnp.minimum(jnp.sum(neg), num_samples - num_pos)
  n = match_labels.shape[0]
  pos_key, neg_key = jax.random.split(key)

  def pick(k, mask, count, size):
    """``size`` random members of ``mask``; the first ``count`` are the sample."""
    size = min(size, n)
    _, idx = jax.lax.top_k(jnp.where(mask, jax.random.uniform(k, (n,)), -1.0), size)
    return idx.astype(jnp.int32), jnp.arange(size) < count

  pos_idx, pos_ok = pick(pos_key, pos, num_pos, max_pos)
  neg_idx, neg_ok = pick(neg_key, neg, num_neg, num_samples)
  idx = jnp.concatenate([pos_idx, neg_idx])
  labels = jnp.concatenate([jnp.where(pos_ok, 1, -1), jnp.where(neg_ok, 0, -1)])
  # Chosen positives, then chosen negatives, then empty slots.
  order = jnp.argsort(labels < 0, stable=True)
  idx, labels = idx[order], labels[order].astype(jnp.int32)
  if idx.shape[0] < num_samples:
    pad = num_samples - idx.shape[0]
    idx = jnp.concatenate([idx, jnp.zeros((pad,), jnp.int32)])
    labels = jnp.concatenate([labels, jnp.full((pad,), -1, jnp.int32)])
  idx, labels = idx[:num_samples], labels[:num_samples]
  return jnp.where(labels >= 0, idx, 0), labels
