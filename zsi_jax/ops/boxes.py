"""Box arithmetic: areas, overlaps, clipping and the R-CNN delta coding.

All boxes are ``[x1, y1, x2, y2]`` in continuous pixel coordinates (width is
``x2 - x1``, no ``+1``), matching torchvision and detectron2.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp

# Box deltas are divided by these before the loss (docs/REFERENCE_NOTES.md); torchvision
# expresses the same thing as BoxCoder weights (10, 10, 5, 5) = 1 / stds.
DEFAULT_STDS = (0.1, 0.1, 0.2, 0.2)
# Largest log-ratio a predicted dw/dh may have, so exp() cannot overflow.
DEFAULT_MAX_RATIO = math.log(1000.0 / 16)


def box_area(boxes):
  """Areas of boxes. boxes: [..., 4] -> [...]; degenerate boxes get 0."""
  w = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
  h = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
  return w * h


def _intersection(a, b):
  """Pairwise intersection areas. a: [N, 4], b: [M, 4] -> [N, M]."""
  lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
  rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
  wh = jnp.maximum(rb - lt, 0.0)
  return wh[..., 0] * wh[..., 1]


def box_iou(a, b):
  """Pairwise IoU. a: [N, 4], b: [M, 4] -> [N, M] float32.

  Pairs whose union is empty (two zero-area boxes) get IoU 0 instead of NaN, so
  padded boxes (all zeros) never match anything.
  """
  inter = _intersection(a, b)
  union = box_area(a)[:, None] + box_area(b)[None, :] - inter
  return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def box_ioa(a, b):
  """Intersection over the area of ``a``. a: [N, 4], b: [M, 4] -> [N, M].

  Used to keep proposals that lie inside crowd regions out of the negatives.
  """
  inter = _intersection(a, b)
  area = box_area(a)[:, None]
  return jnp.where(area > 0, inter / jnp.where(area > 0, area, 1.0), 0.0)


def clip_boxes(boxes, image_hw):
  """Clips boxes to the image. boxes: [..., 4]; image_hw: (height, width) -> [..., 4]."""
  h = jnp.asarray(image_hw[0], boxes.dtype)
  w = jnp.asarray(image_hw[1], boxes.dtype)
  x1 = jnp.clip(boxes[..., 0], 0.0, w)
  y1 = jnp.clip(boxes[..., 1], 0.0, h)
  x2 = jnp.clip(boxes[..., 2], 0.0, w)
  y2 = jnp.clip(boxes[..., 3], 0.0, h)
  return jnp.stack([x1, y1, x2, y2], axis=-1)


def _center_size(boxes):
  w = boxes[..., 2] - boxes[..., 0]
  h = boxes[..., 3] - boxes[..., 1]
  return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h


def encode(rois, targets, stds: Sequence[float] = DEFAULT_STDS):
  """Regression targets that turn ``rois`` into ``targets``.

  Args:
    rois: [..., 4] reference boxes (anchors or proposals), positive size.
    targets: [..., 4] matched ground-truth boxes.
    stds: per-coordinate normalisers (dx, dy, dw, dh).
  Returns:
    [..., 4] deltas ``((tx - rx) / rw, (ty - ry) / rh, log(tw / rw), log(th / rh)) / stds``.
  """
  rx, ry, rw, rh = _center_size(rois)
  tx, ty, tw, th = _center_size(targets)
  # Padded entries may be all-zero boxes; guard the divisions and logs so they
  # produce finite (and later masked) values instead of NaNs that would leak
  # through a masked sum's gradient.
  rw = jnp.maximum(rw, 1e-6)
  rh = jnp.maximum(rh, 1e-6)
  dx = (tx - rx) / rw
  dy = (ty - ry) / rh
  dw = jnp.log(jnp.maximum(tw, 1e-6) / rw)
  dh = jnp.log(jnp.maximum(th, 1e-6) / rh)
  deltas = jnp.stack([dx, dy, dw, dh], axis=-1)
  return deltas / jnp.asarray(stds, deltas.dtype)


def decode(rois, deltas, stds: Sequence[float] = DEFAULT_STDS,
           max_ratio: float = DEFAULT_MAX_RATIO):
  """Applies deltas to boxes; inverse of :func:`encode`.

  Args:
    rois: [..., 4] reference boxes.
    deltas: [..., 4] normalised deltas, as produced by a box-regression head.
    stds: per-coordinate normalisers used in :func:`encode`.
    max_ratio: dw and dh are clamped to this before ``exp`` (torchvision's
      ``bbox_xform_clip``).
  Returns:
    [..., 4] decoded boxes (not clipped to the image).
  """
  d = deltas * jnp.asarray(stds, deltas.dtype)
  rx, ry, rw, rh = _center_size(rois)
  dw = jnp.minimum(d[..., 2], max_ratio)
  dh = jnp.minimum(d[..., 3], max_ratio)
  cx = rx + d[..., 0] * rw
  cy = ry + d[..., 1] * rh
  w = rw * jnp.exp(dw)
  h = rh * jnp.exp(dh)
  return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)
