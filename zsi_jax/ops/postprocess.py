"""Detection post-processing and mask pasting (host side, and device side for padded batches)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from zsi_jax.ops import boxes as box_ops
from zsi_jax.ops.nms import batched_nms_padded
from zsi_jax.ops.targets import resample_box_masks


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


def to_original_boxes(boxes, scale, orig_hw, flipped=False, input_width=None):
  """Maps boxes from the resized input back to the original image.

  Args:
    boxes: [N, 4] in input pixels.
    scale: input = original * scale.
    orig_hw: (height, width) of the original image.
    flipped: whether the input was flipped horizontally; then ``input_width``
      (the resized image's width) is needed.
  Returns:
    [N, 4] float64 clipped to the original image.
  """
  b = np.asarray(boxes, np.float64).copy()
  if flipped:
    b[:, [0, 2]] = input_width - b[:, [2, 0]]
  b /= float(scale)
  h, w = orig_hw
  b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
  b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
  return b


def paste_masks(masks, boxes, image_hw, threshold: float = 0.5):
  """Pastes RoI mask probabilities into full-image binary masks (NumPy, host side).

  Convention: image pixel ``(y, x)`` has centre ``(y + 0.5, x + 0.5)``; it is
  mapped into the box's ``m x m`` mask frame (mask pixel ``i`` covers
  ``[i, i+1)``), the probability is sampled bilinearly with zeros outside the
  mask, and thresholded with ``>= threshold``. Only pixels inside each box's
  extent are computed; everything else is False.

  Bilinear sampling on a grid is separable, so each paste is two small
  matrix products, ``Wy [rows, m] @ mask [m, m] @ Wx^T [m, cols]``, instead of
  four gathers and a dozen elementwise passes over the box's pixels.

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
    r0, r1 = (int(t) for t in _paste_extent(y1, y2, m, h, np))
    c0, c1 = (int(t) for t in _paste_extent(x1, x2, m, w, np))
    if c1 <= c0 or r1 <= r0:
      continue
    wy = bilinear_weights(_mask_frame(np.arange(r0, r1), y1, bh, m), m, np)
    wx = bilinear_weights(_mask_frame(np.arange(c0, c1), x1, bw, m), m, np)
    out[i, r0:r1, c0:c1] = (wy @ masks[i].astype(np.float64)) @ wx.T >= threshold
  return out


def _paste_extent(lo, hi, m, size, xp):
  """[start, stop) of the pixels whose centres can read a non-zero mask value.

  That is the box widened by one mask pixel on each side (half a pixel would
  do; the margin is harmless), in whole pixels, clipped to ``[0, size)``.
  """
  cell = (hi - lo) / m
  return xp.maximum(xp.floor(lo - cell), 0), xp.minimum(xp.ceil(hi + cell), size)


def _mask_frame(pixels, lo, extent, m):
  """Mask-frame coordinates (cell centres at 0..m-1) of pixel centres ``pixels + 0.5``."""
  return (pixels + 0.5 - lo) / extent * m - 0.5


def bilinear_weights(coords, m: int, xp=jnp):
  """Bilinear interpolation weights of ``m`` mask cells, zero outside the mask.

  Sampling row ``l`` of a length-``m`` signal at ``coords[l]`` (cell centres
  at 0..m-1) is ``weights[l] @ signal``; samples within one cell of either end
  fade linearly to zero, as if the signal were padded with one zero cell.

  Args:
    coords: [..., L] float sample positions.
    m: number of cells (static).
    xp: ``numpy`` or ``jax.numpy``.
  Returns:
    [..., L, m] weights, each row summing to at most 1.
  """
  # Positions in the zero-padded signal (cells 0 and m+1 are the zero pads);
  # clipping to the pads makes far-away samples read zeros.
  c = xp.clip(coords + 1.0, 0.0, m + 1.0)
  lo = xp.clip(xp.floor(c), 0, m)
  frac = c - lo
  cells = xp.arange(m + 2, dtype=c.dtype)
  w = (xp.where(cells == lo[..., None], 1.0 - frac[..., None], 0.0)
       + xp.where(cells == lo[..., None] + 1, frac[..., None], 0.0))
  return w[..., 1:m + 1]


def paste_masks_padded(masks, boxes, valid, image_hw, out_hw, threshold: float = 0.5):
  """Device-side ``paste_masks`` for a padded set of detections (jit-able).

  The same convention and the same samples as :func:`paste_masks`, computed
  for every detection slot at once as ``Wy @ mask @ Wx^T`` over a static
  ``out_hw`` canvas, so that detection and pasting run in one compiled call
  and only binary masks leave the accelerator. Pixels outside ``image_hw``
  (the image's true size, traced) and slots with ``valid`` False are False.

  Args:
    masks: [N, m, m] float probabilities.
    boxes: [N, 4] float boxes in image pixels.
    valid: [N] bool.
    image_hw: [2] int, the image's size (<= out_hw).
    out_hw: static (H, W) of the canvas returned.
    threshold: float.
  Returns:
    [N, H, W] bool.
  """
  h, w = out_hw
  m = masks.shape[-1]
  boxes = boxes.astype(jnp.float32)
  x1, y1, x2, y2 = (boxes[:, i:i + 1] for i in range(4))
  bw, bh = x2 - x1, y2 - y1
  ys = jnp.arange(h, dtype=jnp.float32)
  xs = jnp.arange(w, dtype=jnp.float32)
  wy = bilinear_weights(_mask_frame(ys, y1, jnp.where(bh > 0, bh, 1.0), m), m)  # [N, H, m]
  wx = bilinear_weights(_mask_frame(xs, x1, jnp.where(bw > 0, bw, 1.0), m), m)  # [N, W, m]
  # Full precision: TF32 / bf16 passes would move values across the threshold.
  hi = jax.lax.Precision.HIGHEST
  rows = jnp.einsum('nhi,nij->nhj', wy, masks.astype(jnp.float32), precision=hi)
  vals = jnp.einsum('nhj,nwj->nhw', rows, wx, precision=hi)
  r0, r1 = _paste_extent(y1, y2, m, image_hw[0], jnp)                              # [N, 1]
  c0, c1 = _paste_extent(x1, x2, m, image_hw[1], jnp)
  in_rows = (ys >= r0) & (ys < r1)                                                 # [N, H]
  in_cols = (xs >= c0) & (xs < c1)                                                 # [N, W]
  ok = valid.astype(bool) & (bw[:, 0] > 0) & (bh[:, 0] > 0)
  keep = ok[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]
  return keep & (vals >= threshold)


def exclusive_masks(masks, boxes, scores, valid, min_score: float, same_object_iou: float = 0.5,
                    rivals: int = 0):
  """Mask probabilities with the pixels another object claims more strongly set to 0.

  Two detections whose boxes overlap by less than ``same_object_iou`` are
  taken for different objects; where their masks overlap, a pixel stays with
  the one whose mask is more probable there, as if each pixel belonged to one
  instance. Only detections scoring at least ``min_score`` claim pixels (a
  weak detection of a part of an object must not take the object's pixels),
  and detections of one object under several classes (box IoU at or above
  ``same_object_iou``) do not compete.

  Args:
    masks: [N, m, m] probabilities, each in its own box's frame.
    boxes: [N, 4] float32; scores: [N] float32; valid: [N] bool.
    min_score: float.
    same_object_iou: static float.
    rivals: static int; > 0: only the first ``rivals`` detections (the
      highest-scoring, in ``select``'s order) can claim pixels; 0: all.
  Returns:
    [N, m, m] float32.
  """
  n, m = masks.shape[0], masks.shape[-1]
  masks = masks.astype(jnp.float32)
  k = min(rivals or n, n)
  claims = valid[:k] & (scores[:k] >= min_score)
  iou = box_ops.box_iou(boxes, boxes[:k])                                 # [N, k]
  rival = valid[:, None] & claims[None, :] & (iou < same_object_iou)
  rival = rival & (jnp.arange(n)[:, None] != jnp.arange(k)[None, :])

  def strongest_so_far(best, j):
    # Detection j's mask in every detection's frame.
    other = resample_box_masks(masks, boxes, boxes, jnp.full((n,), j, jnp.int32), m)
    return jnp.maximum(best, jnp.where(rival[:, j, None, None], other, 0.0)), None

  best, _ = jax.lax.scan(strongest_so_far, jnp.zeros_like(masks), jnp.arange(k))
  return jnp.where(masks >= best, masks, 0.0)
