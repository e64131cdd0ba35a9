"""RoI pooling for a batch: multi-level RoIAlign over P2..P5 (``ops.roi_align``)."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from zsi_jax.ops import roi_align


def pool_rois(features: Sequence[jnp.ndarray], rois, output_size: int, sampling_ratio: int,
              form: str = 'gather'):
  """Pools each RoI from its FPN level.

  Args:
    features: P2..P5 (further levels are ignored), each [B, H_l, W_l, C].
    rois: [B, R, 4] boxes in input-image pixels.
    output_size: s.
    sampling_ratio: RoIAlign taps per bin and axis.
    form: the RoIAlign form (``roi_align.FORMS``; the same values and gradients).
  Returns:
    [B, R, s, s, C].
  """
  levels = list(features[:4])
  return jax.vmap(lambda f, r: roi_align.multilevel_roi_align(
      f, r, output_size=output_size, sampling_ratio=sampling_ratio, form=form))(levels, rois)
