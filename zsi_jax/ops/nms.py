"""Exact greedy non-maximum suppression with static output shapes.

The result equals ``torchvision.ops.nms`` for every IoU threshold: boxes are
visited in descending score order and a box is kept unless a box kept earlier
overlaps it with IoU strictly greater than the threshold. (The tiled
"suppress within blocks" TPU algorithm used by several JAX detection codebases
is not exact below a threshold of 0.5; this one is.) Ties in score keep the
lower index first (a stable sort).

Work: N / block_size sequential steps, each an [N, block_size] overlap test
and a few [block_size, block_size] ones (see :func:`nms_padded`).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from zsi_jax.ops.boxes import box_iou


def _fixed_point_keep(cand, over):
  """Greedy NMS inside one block, given candidates not suppressed from outside.

  Args:
    cand: [B] bool, boxes (in score order) still in the running.
    over: [B, B] bool, ``over[j, i]``: j comes before i and IoU(j, i) > threshold.
  Returns:
    [B] bool keep flags, equal to visiting the boxes one by one.

  Iterates ``keep[i] = cand[i] and no kept j < i overlaps i`` from ``keep =
  cand``. The greedy result is the only fixed point of this map (each entry
  depends on earlier entries alone, so it is settled by induction), and after t
  iterations the first t entries are settled; so the loop ends, at most after
  B + 1 iterations, and ends on the greedy result. With real boxes it takes a
  handful (the depth of the suppression chains).
  """

  def body(carry):
    keep, _ = carry
    new = cand & ~jnp.any(over & keep[:, None], axis=0)
    return new, jnp.any(new != keep)

  keep, _ = jax.lax.while_loop(lambda c: c[1], body, (cand, jnp.bool_(True)))
  return keep


def nms_padded(boxes, scores, iou_threshold, max_output: int, valid: Optional[jnp.ndarray] = None,
               block_size: int = 256):
  """Greedy NMS.

  Boxes are processed in score order in blocks of ``block_size``: a block is
  first suppressed by the boxes kept in earlier blocks (one [N, B] overlap
  test), then resolved inside itself by :func:`_fixed_point_keep`. Same result
  as visiting the boxes one by one, but with N / B sequential steps of
  parallel work instead of N tiny ones (on a GPU each step is a kernel launch:
  2000 of them per FPN level made the proposal stage most of a train step).

  Args:
    boxes: [N, 4] float.
    scores: [N] float; NaN or -inf scores count as invalid.
    iou_threshold: float (may be traced); suppress IoU > threshold.
    max_output: static int, size of the output.
    valid: optional [N] bool; invalid entries are never selected and never
      suppress anything.
    block_size: static boxes per block.
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
  bsz = max(1, min(block_size, n))
  num_blocks = -(-n // bsz)
  pad = num_blocks * bsz - n
  b = jnp.pad(boxes[order].astype(jnp.float32), ((0, pad), (0, 0)))
  v = jnp.pad(ok[order], (0, pad))
  later = jnp.triu(jnp.ones((bsz, bsz), bool), k=1)    # [j, i]: j before i

  def cond(carry):
    blk, _, count = carry
    return (blk < num_blocks) & (count < max_output)

  def body(carry):
    blk, keep, count = carry
    start = blk * bsz
    bb = jax.lax.dynamic_slice_in_dim(b, start, bsz)
    # Kept boxes are all in earlier blocks (keep is False from here on).
    outside = jnp.any(keep[:, None] & (box_iou(b, bb) > iou_threshold), axis=0)
    cand = jax.lax.dynamic_slice_in_dim(v, start, bsz) & ~outside
    k = _fixed_point_keep(cand, later & (box_iou(bb, bb) > iou_threshold))
    keep = jax.lax.dynamic_update_slice_in_dim(keep, k, start, 0)
    return blk + 1, keep, count + jnp.sum(k, dtype=jnp.int32)

  _, keep, _ = jax.lax.while_loop(
      cond, body, (0, jnp.zeros((num_blocks * bsz,), bool), jnp.int32(0)))
  # The last block may push the count past max_output: keep the first ones.
  (pos,) = jnp.nonzero(keep, size=max_output, fill_value=-1)
  idx = jnp.where(pos >= 0, order[jnp.clip(pos, 0, n - 1)], -1).astype(jnp.int32)
  return idx, jnp.sum(pos >= 0, dtype=jnp.int32)


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
