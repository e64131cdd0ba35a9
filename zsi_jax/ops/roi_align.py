"""RoIAlign (aligned, half-pixel convention) on one or several FPN levels.

Matches ``torchvision.ops.roi_align(..., aligned=True)`` with a fixed
``sampling_ratio``: each output bin averages ``ratio x ratio`` bilinear samples;
a sample more than one pixel outside the map contributes 0, samples within
that pixel are clamped to the border.

Each output bin reads the two neighbours of each of its samples along each
axis: ``(2 * ratio)^2`` taps of C channels with separable bilinear weights.
Two forms compute the same values and gradients (``FORMS``):
- ``'gather'``: every tap of every bin in one gather, [R, out, T, out, T, C],
  summed with the weights; differentiated by JAX (the taps' gradient is as
  large again).
- ``'per_tap'``: one tap position at a time gathered, weighted and added
  (XLA fuses the sum; nothing of tap size is stored), with a custom gradient
  that scatter-adds one tap position at a time in a loop and keeps only the
  taps' indices and weights: the pooled output's size in memory instead of
  ``(2 * ratio)^2`` times it, and faster on the CPU.
Multi-level pooling concatenates the levels into one buffer and gives each
RoI its level's offset, size and scale, so all RoIs are pooled together
whatever their level (no per-level masking, no wasted 4x work). Boxes get no
gradient (as in torchvision).
Cost: R * out^2 * (2 * ratio)^2 gathered rows of C channels.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from zsi_jax.ops.boxes import box_area


def _axis_samples(lo, length, size, out, ratio):
  """Sample coordinates along one axis and their bilinear terms.

  Args:
    lo: [R] start of the RoI (in feature pixels, already shifted by -0.5).
    length: [R] extent of the RoI.
    size: [R] feature-map extent along this axis (per RoI: its level's size).
    out: output bins; ratio: samples per bin.
  Returns:
    low, high: [R, out*ratio] int32 neighbour indices; w_low, w_high: weights
    (zero for samples outside the map).
  """
  bin_len = length / out
  steps = (jnp.arange(out * ratio, dtype=jnp.float32) + 0.5) / ratio
  c = lo[:, None] + steps[None, :] * bin_len[:, None]
  size = size[:, None].astype(jnp.float32)
  inside = (c >= -1.0) & (c <= size)
  c = jnp.maximum(c, 0.0)
  low = jnp.floor(c)
  at_edge = low >= size - 1
  low = jnp.where(at_edge, size - 1, low)
  c = jnp.where(at_edge, low, c)
  high = jnp.where(at_edge, low, low + 1)
  frac = c - low
  w_low = jnp.where(inside, 1.0 - frac, 0.0)
  w_high = jnp.where(inside, frac, 0.0)
  return low.astype(jnp.int32), high.astype(jnp.int32), w_low, w_high


FORMS = ('gather', 'per_tap')


def _pool(flat, offsets, heights, widths, scales, rois, output_size, sampling_ratio, form):
  """RoIAlign from a flattened buffer.

  Args:
    flat: [sum_l H_l*W_l, C] features of all levels.
    offsets, heights, widths: [R] int32 per RoI: its level's start row in
      ``flat`` and its level's size.
    scales: [R] float spatial scale of each RoI's level.
    rois: [R, 4] boxes in image pixels.
    form: one of ``FORMS``.
  Returns:
    [R, output_size, output_size, C] float32.
  """
  if sampling_ratio <= 0:
    raise ValueError('sampling_ratio must be > 0: the adaptive ratio of torchvision '
                     '(sampling_ratio=0) would make shapes depend on the RoI size')
  if form not in FORMS:
    raise ValueError(f'RoIAlign form must be one of {FORMS}, got {form!r}')
  r = rois.shape[0]
  out, ratio = output_size, sampling_ratio
  box = jax.lax.stop_gradient(rois) * scales[:, None] - 0.5

  def bin_taps(lo, length, size):
    # Each output bin reads 2 * ratio rows (columns): the low and high
    # neighbour of each of its samples, weighted by bilinear weight / ratio.
    low, high, w_low, w_high = _axis_samples(lo, length, size, out, ratio)
    per_bin = 2 * ratio
    return (jnp.stack([low, high], -1).reshape(r, out, per_bin),
            jnp.stack([w_low, w_high], -1).reshape(r, out, per_bin) / ratio)

  yi, wy = bin_taps(box[:, 1], box[:, 3] - box[:, 1], heights)      # [R, out, T]
  xi, wx = bin_taps(box[:, 0], box[:, 2] - box[:, 0], widths)
  # Row of every tap in ``flat`` and its weight, [R, out, T, out, T]; indices
  # are in bounds by construction (clamped samples, per-level offsets).
  idx = (offsets[:, None, None, None, None] + yi[:, :, :, None, None] *
         widths[:, None, None, None, None] + xi[:, None, None, :, :])
  weights = wy[:, :, :, None, None] * wx[:, None, None, :, :]      # float32: sums in f32
  if form == 'gather':
    taps = flat.at[idx.reshape(-1)].get(mode='promise_in_bounds').reshape(
        idx.shape + flat.shape[-1:])
    return jnp.sum(taps * weights[..., None], axis=(2, 4))
  by_tap = lambda a: jnp.moveaxis(a, (2, 4), (0, 1)).reshape(idx.shape[2] * idx.shape[4], -1)
  pooled = _weighted_taps(flat.shape, jnp.dtype(flat.dtype), flat, by_tap(idx),
                          by_tap(weights))
  return pooled.reshape((r, out, out) + flat.shape[-1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _weighted_taps(shape, dtype, flat, idx, weights):
  """``sum_t flat[idx[t]] * weights[t]``, one tap position ``t`` at a time.

  Args:
    shape, dtype: ``flat``'s (static, for the gradient).
    flat: [M, C] features.
    idx: [T, N] int32 rows of ``flat``, in bounds.
    weights: [T, N] float32.
  Returns:
    [N, C] float32. The gradient reaches ``flat`` only.
  """
  del shape, dtype
  total = None
  for t in range(idx.shape[0]):
    term = flat.at[idx[t]].get(mode='promise_in_bounds') * weights[t][:, None]
    total = term if total is None else total + term
  return total


def _weighted_taps_fwd(shape, dtype, flat, idx, weights):
  return _weighted_taps(shape, dtype, flat, idx, weights), (idx, weights)


def _weighted_taps_bwd(shape, dtype, residuals, grad):
  # A loop, so one tap position's scattered rows [N, C] are alive at a time.
  def add_tap(total, tap):
    rows, w = tap
    return total.at[rows].add(grad * w[:, None], mode='promise_in_bounds'), None
  idx, weights = residuals
  total = jax.lax.scan(add_tap, jnp.zeros(shape, jnp.float32), (idx, weights))[0]
  return total.astype(dtype), None, None


_weighted_taps.defvjp(_weighted_taps_fwd, _weighted_taps_bwd)


def roi_align(features, rois, output_size: int, spatial_scale: float, sampling_ratio: int,
              form: str = 'gather'):
  """Single-level RoIAlign (aligned=True).

  Args:
    features: [H, W, C] feature map.
    rois: [R, 4] boxes in image pixels.
    output_size: static bins per side.
    spatial_scale: feature pixels per image pixel (1 / stride).
    sampling_ratio: static samples per bin per axis (> 0).
    form: one of ``FORMS`` (the same values and gradients).
  Returns:
    [R, output_size, output_size, C], same dtype as ``features``.
  """
  h, w, c = features.shape
  r = rois.shape[0]
  full = lambda v: jnp.full((r,), v, jnp.int32)
  out = _pool(features.reshape(h * w, c), full(0), full(h), full(w),
              jnp.full((r,), spatial_scale, jnp.float32), rois.astype(jnp.float32),
              output_size, sampling_ratio, form)
  return out.astype(features.dtype)


def assign_fpn_levels(rois, min_level: int = 2, max_level: int = 5,
                      canonical_size: float = 224.0, canonical_level: int = 4):
  """FPN level of each RoI: floor(4 + log2(sqrt(area) / 224)), clipped.

  Args:
    rois: [R, 4].
  Returns:
    [R] int32 in [min_level, max_level].
  """
  size = jnp.sqrt(box_area(rois))
  lvl = jnp.floor(canonical_level + jnp.log2(size / canonical_size + 1e-6))
  return jnp.clip(lvl, min_level, max_level).astype(jnp.int32)


def multilevel_roi_align(features: Sequence[jnp.ndarray], rois, output_size: int,
                         sampling_ratio: int = 2, min_level: int = 2, form: str = 'gather'):
  """RoIAlign over a pyramid, each RoI on its own level.

  Args:
    features: maps ``[H_l, W_l, C]`` for levels ``min_level, min_level+1, ...``
      (level l has stride 2**l).
    rois: [R, 4] boxes in image pixels.
    output_size, sampling_ratio, form: as in :func:`roi_align`.
  Returns:
    [R, output_size, output_size, C].
  """
  max_level = min_level + len(features) - 1
  c = features[0].shape[-1]
  sizes = [f.shape[:2] for f in features]
  starts, total = [], 0
  for h, w in sizes:
    starts.append(total)
    total += h * w
  flat = jnp.concatenate([f.reshape(-1, c) for f in features], axis=0)
  lvl = assign_fpn_levels(rois, min_level, max_level) - min_level
  pick = lambda vals, dt: jnp.asarray(vals, dt)[lvl]
  out = _pool(flat, pick(starts, jnp.int32), pick([h for h, _ in sizes], jnp.int32),
              pick([w for _, w in sizes], jnp.int32),
              pick([2.0 ** -(min_level + i) for i in range(len(features))], jnp.float32),
              rois.astype(jnp.float32), output_size, sampling_ratio, form)
  return out.astype(features[0].dtype)
