"""Exact greedy non-maximum suppression with static output shapes.

The result equals ``torchvision.ops.nms`` for every IoU threshold: boxes are
visited in descending score order and a box is kept unless a box kept earlier
overlaps it with IoU strictly greater than the threshold. (The tiled
"suppress within blocks" TPU algorithm used by several JAX detection codebases
is not exact below a threshold of 0.5; this one is.) Ties in score keep the
lower index first (a stable sort).

Memory: the pairwise IoU matrix is ``[N, N]`` float32 (16 MB for N = 2000);
callers run NMS per FPN level or on a top-k pre-selection.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from zsi_jax.ops.boxes import box_iou


def nms_padded(boxes, scores, iou_threshold, max_output: int, valid: Optional[jnp.ndarray] = None):
  """Greedy NMS.

  Args:
    boxes: [N, 4] float.
    scores: [N] float; NaN or -inf scores count as invalid.
    iou_threshold: float (may be traced); suppress IoU > threshold.
    max_output: static int, size of the output.
    valid: optional [N] bool; invalid entries are never selected and never
      suppress anything.
  Returns:
    indices: [max_output] int32 into ``boxes`` in descending score order,
      -1 in empty slots.
    num_valid: int32 number of selected boxes (<= max_output).
  """
  n = boxes.shape[0]
  ok = jnp.isfinite(scores) & (scores > -jnp.inf)
  if valid is not None:
    ok &= valid.astype(bool)
  s = jnp.where(ok, scores, -jnp.inf)
  order = jnp.argsort(-s, stable=True)
  b = boxes[order]
  v = ok[order]
  iou = box_iou(b, b)

  def cond(carry):
    i, _, count = carry
    return (i < n) & (count < max_output)

  def body(carry):
    i, keep, count = carry
    # Only boxes before i can be kept yet, so this is "suppressed by a kept,
    # higher-scoring box".
    suppressed = jnp.any(keep & (iou[:, i] > iou_threshold))
    k = v[i] & ~suppressed
    return i + 1, keep.at[i].set(k), count + k.astype(jnp.int32)

  _, keep, count = jax.lax.while_loop(cond, body, (0, jnp.zeros((n,), bool), jnp.int32(0)))
  (pos,) = jnp.nonzero(keep, size=max_output, fill_value=-1)
  idx = jnp.where(pos >= 0, order[jnp.maximum(pos, 0)], -1).astype(jnp.int32)
  return idx, count


def batched_nms_padded(boxes, scores, classes, iou_threshold, max_output: int,
                       valid: Optional[jnp.ndarray] = None):
  """NMS within each class (boxes of different classes never suppress each other).

  Boxes are shifted by ``class * (max_coordinate + 1)`` so that boxes of
  different classes cannot overlap; then one greedy NMS runs. Same outputs as
  :func:`nms_padded`.

  Args:
    boxes: [N, 4]; scores: [N]; classes: [N] int; iou_threshold; max_output;
    valid: optional [N] bool.
  """
  ok = jnp.ones(boxes.shape[:1], bool) if valid is None else valid.astype(bool)
  # Boxes span [-m, m]; shifting by 2m + 1 per class keeps classes apart.
  span = 2.0 * jnp.max(jnp.where(ok[:, None], jnp.abs(boxes), 0.0)) + 1.0
  shifted = boxes + (classes.astype(boxes.dtype) * span)[:, None]
  return nms_padded(shifted, scores, iou_threshold, max_output, valid=ok)
