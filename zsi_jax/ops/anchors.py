"""FPN anchors for a fixed (padded) image size, computed once in NumPy.

Convention (that of torchvision's ``AnchorGenerator``): for a level with stride
``s`` and anchor size ``z = scale * s``, ratio ``r = h / w`` gives
``w = z / sqrt(r)``, ``h = z * sqrt(r)``; the base anchor
``round([-w/2, -h/2, w/2, h/2])`` is shifted to every location ``(x*s, y*s)``
(the top-left corner of the cell, not its centre). Anchors are ordered by
location row-major over the NHWC feature map, then by ratio, then by scale, so a head output
``[H_l, W_l, A]`` reshaped to ``[-1]`` lines up with them.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np


def feature_sizes(image_hw: Sequence[int], strides: Sequence[int]) -> List[Tuple[int, int]]:
  """Feature-map sizes of a stride-2 pyramid: ``ceil(H / s), ceil(W / s)`` per stride."""
  h, w = int(image_hw[0]), int(image_hw[1])
  return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def base_anchors(size: float, ratios: Sequence[float]) -> np.ndarray:
  """Anchors centred at the origin for one size. -> [len(ratios), 4] float32."""
  r = np.asarray(ratios, np.float64)
  h_ratio = np.sqrt(r)
  ws = size / h_ratio
  hs = size * h_ratio
  return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2).astype(np.float32)


def generate_anchors(image_hw: Sequence[int], strides: Sequence[int] = (4, 8, 16, 32, 64),
                     scales: Sequence[float] = (8.0,),
                     ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> List[np.ndarray]:
  """Anchors of every pyramid level.

  Args:
    image_hw: padded image size (height, width).
    strides: level strides.
    scales: anchor sizes in units of the stride (8 -> 32 px on stride 4).
    ratios: height / width ratios.
  Returns:
    list (one per level) of ``[H_l * W_l * A, 4]`` float32 anchors, A =
    len(scales) * len(ratios).
  """
  out = []
  for (fh, fw), s in zip(feature_sizes(image_hw, strides), strides):
    # Ratio-major, scale-minor, as torchvision orders the base anchors.
    base = np.concatenate([base_anchors(sc * s, [r]) for r in ratios for sc in scales], axis=0)
    ys, xs = np.meshgrid(np.arange(fh, dtype=np.float32) * s,
                         np.arange(fw, dtype=np.float32) * s, indexing='ij')
    shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
    out.append((shifts + base[None]).reshape(-1, 4).astype(np.float32))
  return out


def anchor_validity(anchors, image_hw, allowed_border: float = 0.0):
  """Anchors lying inside the image (up to ``allowed_border`` pixels outside).

  Works with NumPy or JAX inputs (``image_hw`` may be traced, e.g. each image's
  real size inside the padding).

  Args:
    anchors: [N, 4].
    image_hw: (height, width).
    allowed_border: tolerance in pixels.
  Returns:
    [N] bool, False for anchors crossing the border (ignored by the RPN loss).
  """
  h, w = image_hw[0], image_hw[1]
  return ((anchors[:, 0] >= -allowed_border) & (anchors[:, 1] >= -allowed_border)
          & (anchors[:, 2] <= w + allowed_border) & (anchors[:, 3] <= h + allowed_border))
