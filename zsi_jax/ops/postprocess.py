"""Detection post-processing (device side) and mask pasting (host side)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from zsi_jax.ops import boxes as box_ops
from zsi_jax.ops.nms import batched_nms_padded


def postprocess_detections(rois, roi_valid, class_scores, box_deltas, image_hw,
                           score_threshold: float = 0.05, nms_threshold: float = 0.5,
                           max_detections: int = 100, pre_nms_topk: int = 1000,
                           stds=box_ops.DEFAULT_STDS):
  """Final detections of one image (torchvision RoIHeads.postprocess_detections logic).

  Every (RoI, class) pair is a candidate: its box is decoded with that class's
  deltas (or the shared class-agnostic ones) and clipped; pairs scoring at most
  ``score_threshold`` or with an empty box are dropped; the best
  ``pre_nms_topk`` pairs go through per-class NMS; the best ``max_detections``
  survive.

  Args:
    rois: [R, 4] float32; roi_valid: [R] bool.
    class_scores: [R, K] float probabilities, background removed.
    box_deltas: [R, K, 4] class-specific or [R, 4] class-agnostic deltas.
    image_hw: (height, width).
    score_threshold, nms_threshold: floats; max_detections, pre_nms_topk: static ints.
    stds: delta normalisers.
  Returns:
    dict(boxes [D, 4], scores [D], classes [D] int32 (-1 empty), roi_index [D] int32
    (-1 empty), valid [D] bool), D = max_detections, sorted by descending score.
  """
  r, k = class_scores.shape
  if box_deltas.ndim == 2:
    box_deltas = jnp.broadcast_to(box_deltas[:, None, :], (r, k, 4))
  boxes = box_ops.clip_boxes(box_ops.decode(rois[:, None, :], box_deltas, stds), image_hw)
  boxes = boxes.reshape(-1, 4)
  scores = class_scores.reshape(-1)
  classes = jnp.tile(jnp.arange(k, dtype=jnp.int32), r)
  roi_idx = jnp.repeat(jnp.arange(r, dtype=jnp.int32), k)
  w = boxes[:, 2] - boxes[:, 0]
  h = boxes[:, 3] - boxes[:, 1]
  # torchvision removes boxes smaller than 1e-2 and scores <= threshold.
  ok = (roi_valid.astype(bool)[roi_idx] & (scores > score_threshold)
        & (w >= 1e-2) & (h >= 1e-2))
  n = min(pre_nms_topk, scores.shape[0])
  top_s, top_i = jax.lax.top_k(jnp.where(ok, scores, -jnp.inf), n)
  top_ok = ok[top_i]
  keep, _ = batched_nms_padded(boxes[top_i], top_s, classes[top_i], nms_threshold,
                               max_detections, valid=top_ok)
  if keep.shape[0] < max_detections:
    keep = jnp.concatenate([keep, jnp.full((max_detections - keep.shape[0],), -1, jnp.int32)])
  valid = keep >= 0
  sel = top_i[jnp.maximum(keep, 0)]
  return dict(
      boxes=jnp.where(valid[:, None], boxes[sel], 0.0),
      scores=jnp.where(valid, scores[sel], 0.0),
      classes=jnp.where(valid, classes[sel], -1),
      roi_index=jnp.where(valid, roi_idx[sel], -1),
      valid=valid)


def paste_masks(masks, boxes, image_hw, threshold: float = 0.5):
  """Pastes RoI mask probabilities into full-image binary masks (NumPy, host side).

  Convention: image pixel ``(y, x)`` has centre ``(y + 0.5, x + 0.5)``; it is
  mapped into the box's ``m x m`` mask frame (mask pixel ``i`` covers
  ``[i, i+1)``), the probability is sampled bilinearly with zeros outside the
  mask, and thresholded with ``>= threshold``. Only pixels inside each box's
  extent are computed; everything else is False.

  Args:
    masks: [N, m, m] float probabilities.
    boxes: [N, 4] float boxes in image pixels.
    image_hw: (height, width).
    threshold: float.
  Returns:
    [N, H, W] bool.
  """
  masks = np.asarray(masks, np.float32)
  boxes = np.asarray(boxes, np.float32)
  h, w = int(image_hw[0]), int(image_hw[1])
  n = masks.shape[0]
  out = np.zeros((n, h, w), bool)
  if n == 0:
    return out
  m = masks.shape[-1]
  for i in range(n):
    x1, y1, x2, y2 = (float(t) for t in boxes[i])
    bw, bh = x2 - x1, y2 - y1
    if not (bw > 0 and bh > 0):
      continue
    # Pixels whose centres can read a non-zero value (half a mask pixel beyond the box).
    px = bw / m
    py = bh / m
    c0 = max(int(np.floor(x1 - px)), 0)
    c1 = min(int(np.ceil(x2 + px)), w)
    r0 = max(int(np.floor(y1 - py)), 0)
    r1 = min(int(np.ceil(y2 + py)), h)
    if c1 <= c0 or r1 <= r0:
      continue
    u = (np.arange(c0, c1) + 0.5 - x1) / bw * m - 0.5
    v = (np.arange(r0, r1) + 0.5 - y1) / bh * m - 0.5
    out[i, r0:r1, c0:c1] = _bilinear(masks[i], v, u) >= threshold
  return out


def _bilinear(mask, v, u):
  """Bilinear samples of ``mask`` [m, m] at rows ``v`` x columns ``u``, zero outside."""
  m = mask.shape[0]
  p = np.pad(mask, 1)
  u = np.clip(u + 1.0, 0.0, m + 1.0)
  v = np.clip(v + 1.0, 0.0, m + 1.0)
  u0 = np.clip(np.floor(u), 0, m).astype(np.int64)
  v0 = np.clip(np.floor(v), 0, m).astype(np.int64)
  fu = (u - u0)[None, :]
  fv = (v - v0)[:, None]
  a = p[v0[:, None], u0[None, :]]
  b = p[v0[:, None], u0[None, :] + 1]
  c = p[v0[:, None] + 1, u0[None, :]]
  d = p[v0[:, None] + 1, u0[None, :] + 1]
  return (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv
