"""Training targets: RPN anchor labels, sampled RoIs and mask targets.

Crowd ground truth (COCO ``iscrowd``) is never matched: it is removed from the
matching, and a candidate that would be a negative but lies mostly inside a
crowd region (IoA > ``crowd_ioa_threshold``) is ignored instead, so the
detector is not taught that a crowd of people is background.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from zsi_jax.ops import boxes as box_ops
from zsi_jax.ops.sampling import match_boxes, sample_balanced


@dataclasses.dataclass(frozen=True)
class RpnTargetConfig:
  """Anchor labelling for the RPN; the defaults are the authors' (docs/REFERENCE_NOTES.md)."""
  positive_threshold: float = 0.7
  negative_threshold: float = 0.3
  allow_low_quality: bool = True
  low_quality_min: float = 0.3
  num_samples: int = 256
  positive_fraction: float = 0.5
  # torchvision's RPN BoxCoder uses weights (1, 1, 1, 1): no normalisation.
  stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
  crowd_ioa_threshold: float = 0.5


@dataclasses.dataclass(frozen=True)
class RoiSamplingConfig:
  """RoI sampling for the box and mask heads; the defaults are the authors' (docs/REFERENCE_NOTES.md)."""
  positive_threshold: float = 0.5
  negative_threshold: float = 0.5
  num_samples: int = 512
  positive_fraction: float = 0.25
  stds: Sequence[float] = box_ops.DEFAULT_STDS
  crowd_ioa_threshold: float = 0.5


def _match_with_crowd(candidates, gt_boxes, gt_valid, gt_crowd, pos_thr, neg_thr,
                      allow_low_quality, low_quality_min, crowd_ioa_threshold,
                      candidate_valid=None):
  """match_boxes with crowd gts excluded and crowd-covered negatives ignored.

  Invalid candidates (border anchors, padded proposals) get IoU 0 before
  matching, so a gt's low-quality match is searched among valid ones only
  (mmdetection assigns inside anchors only).
  """
  gt_valid = jnp.asarray(gt_valid).astype(bool)
  gt_crowd = jnp.asarray(gt_crowd).astype(bool)
  matchable = gt_valid & ~gt_crowd
  iou = box_ops.box_iou(candidates, gt_boxes)
  if candidate_valid is not None:
    iou = jnp.where(candidate_valid[:, None], iou, 0.0)
  matched, labels = match_boxes(iou, matchable, pos_thr, neg_thr, allow_low_quality,
                                low_quality_min)
  ioa = jnp.where((gt_valid & gt_crowd)[None, :], box_ops.box_ioa(candidates, gt_boxes), 0.0)
  in_crowd = jnp.max(ioa, axis=1, initial=0.0) > crowd_ioa_threshold
  labels = jnp.where((labels == 0) & in_crowd, -1, labels)
  return matched, labels


def rpn_targets(key, anchors, anchor_valid, gt_boxes, gt_valid, gt_crowd, cfg: RpnTargetConfig):
  """Labels and regression targets for all anchors of one image.

  Args:
    key: PRNG key for the balanced sample.
    anchors: [N, 4] float32 anchors of all levels.
    anchor_valid: [N] bool; False for anchors crossing the border (ignored).
    gt_boxes: [G, 4] float32; gt_valid: [G] bool; gt_crowd: [G] bool.
    cfg: RpnTargetConfig (or anything with the same fields).
  Returns:
    dict(labels [N] int32: 1 fg, 0 bg, -1 not sampled / ignored;
         box_targets [N, 4] float32 encoded deltas (meaningful for positives);
         box_weights [N] float32, 1 for sampled positives).
  """
  anchors = jnp.asarray(anchors, jnp.float32)
  gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
  anchor_valid = jnp.asarray(anchor_valid).astype(bool)
  n = anchors.shape[0]
  matched, labels = _match_with_crowd(
      anchors, gt_boxes, gt_valid, gt_crowd, cfg.positive_threshold, cfg.negative_threshold,
      cfg.allow_low_quality, getattr(cfg, 'low_quality_min', 0.0),
      getattr(cfg, 'crowd_ioa_threshold', 0.5), candidate_valid=anchor_valid)
  idx, sampled = sample_balanced(key, labels, cfg.num_samples, cfg.positive_fraction,
                                 candidate_valid=anchor_valid)
  # Scatter the sample back onto all anchors; empty slots write to a dummy row.
  dest = jnp.where(sampled >= 0, idx, n)
  out = jnp.full((n + 1,), -1, jnp.int32).at[dest].set(sampled)[:n]
  stds = getattr(cfg, 'stds', (1.0, 1.0, 1.0, 1.0))
  targets = box_ops.encode(anchors, gt_boxes[matched], stds)
  pos = out == 1
  return dict(labels=out, box_targets=jnp.where(pos[:, None], targets, 0.0),
              box_weights=pos.astype(jnp.float32))


def sample_rois(key, proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, gt_crowd,
                cfg: RoiSamplingConfig):
  """Samples RoIs for the heads; ground-truth boxes are added as candidates.

  Args:
    key: PRNG key.
    proposals: [P, 4] float32; proposal_valid: [P] bool.
    gt_boxes: [G, 4]; gt_classes: [G] int32 (0..K-1, -1 padding); gt_valid: [G] bool;
    gt_crowd: [G] bool.
    cfg: RoiSamplingConfig.
  Returns:
    dict(rois [S, 4], labels [S] int32 (0 bg, k+1 class k, -1 empty slot),
         matched_gt [S] int32 (index into G; meaningful for positives),
         box_targets [S, 4] float32 (zero except for positives), valid [S] bool),
    S = cfg.num_samples.
  """
  gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
  gt_classes = jnp.asarray(gt_classes, jnp.int32)
  gt_valid = jnp.asarray(gt_valid).astype(bool)
  gt_crowd = jnp.asarray(gt_crowd).astype(bool)
  candidates = jnp.concatenate([proposals, gt_boxes], axis=0)
  # Crowd gts are not added as candidates (they are no positive examples).
  cand_valid = jnp.concatenate([jnp.asarray(proposal_valid).astype(bool), gt_valid & ~gt_crowd])
  matched, labels = _match_with_crowd(
      candidates, gt_boxes, gt_valid, gt_crowd, cfg.positive_threshold, cfg.negative_threshold,
      False, 0.0, getattr(cfg, 'crowd_ioa_threshold', 0.5), candidate_valid=cand_valid)
  idx, sampled = sample_balanced(key, labels, cfg.num_samples, cfg.positive_fraction,
                                 candidate_valid=cand_valid)
  valid = sampled >= 0
  rois = jnp.where(valid[:, None], candidates[idx], 0.0)
  mgt = jnp.where(valid, matched[idx], 0)
  head_label = jnp.where(sampled == 1, gt_classes[mgt] + 1, 0)
  head_label = jnp.where(valid, head_label, -1).astype(jnp.int32)
  stds = getattr(cfg, 'stds', box_ops.DEFAULT_STDS)
  t = box_ops.encode(rois, gt_boxes[mgt], stds)
  t = jnp.where((sampled == 1)[:, None], t, 0.0)
  return dict(rois=rois, labels=head_label, matched_gt=mgt.astype(jnp.int32), box_targets=t,
              valid=valid)


def mask_targets(gt_masks, gt_boxes, rois, matched_gt, output_size: int = 28):
  """Resamples box-cropped gt masks into each RoI's frame (:func:`resample_box_masks`),
  binarised at 0.5.

  Args:
    gt_masks: [G, M, M] float (0/1) masks cropped to their own box.
    gt_boxes: [G, 4] float32.
    rois: [S, 4] float32.
    matched_gt: [S] int32 index into G.
    output_size: static int.
  Returns:
    [S, output_size, output_size] float32 in {0, 1}.
  """
  vals = resample_box_masks(gt_masks, gt_boxes, rois, matched_gt, output_size)
  return (vals >= 0.5).astype(jnp.float32)


def resample_box_masks(gt_masks, gt_boxes, rois, matched_gt, output_size: int = 28):
  """Box-framed masks sampled in other boxes' frames.

  Each RoI is split into ``output_size`` x ``output_size`` bins; the bin centre
  is mapped into the matched box's ``M x M`` mask (pixel ``i`` covers
  ``[i, i+1)``, centre ``i + 0.5``: the half-pixel convention of
  ``roi_align(aligned=True)``) and sampled bilinearly, with zeros outside that
  box.

  Args:
    gt_masks: [G, M, M] float masks (or probabilities), each covering its box.
    gt_boxes: [G, 4] float32.
    rois: [S, 4] float32.
    matched_gt: [S] int32 index into G.
    output_size: static int.
  Returns:
    [S, output_size, output_size] float32.
  """
  gt_masks = jnp.asarray(gt_masks)
  gt_boxes = jnp.asarray(gt_boxes, jnp.float32)
  rois = jnp.asarray(rois, jnp.float32)
  m = gt_masks.shape[-1]
  g = jnp.clip(matched_gt, 0, gt_masks.shape[0] - 1)
  masks = gt_masks[g].astype(jnp.float32)                      # [S, M, M]
  gb = gt_boxes[g]
  frac = (jnp.arange(output_size, dtype=jnp.float32) + 0.5) / output_size
  xs = rois[:, 0:1] + frac[None] * (rois[:, 2:3] - rois[:, 0:1])    # [S, out]
  ys = rois[:, 1:2] + frac[None] * (rois[:, 3:4] - rois[:, 1:2])
  gw = jnp.maximum(gb[:, 2:3] - gb[:, 0:1], 1e-6)
  gh = jnp.maximum(gb[:, 3:4] - gb[:, 1:2], 1e-6)
  u = (xs - gb[:, 0:1]) / gw * m - 0.5                               # mask pixel coords
  v = (ys - gb[:, 1:2]) / gh * m - 0.5

  def sample(mask, u, v):
    # Zero-pad by one so neighbours outside the mask read as background.
    p = jnp.pad(mask, 1)
    u = jnp.clip(u + 1.0, 0.0, m + 1.0)
    v = jnp.clip(v + 1.0, 0.0, m + 1.0)
    u0 = jnp.clip(jnp.floor(u), 0, m).astype(jnp.int32)
    v0 = jnp.clip(jnp.floor(v), 0, m).astype(jnp.int32)
    fu = u - u0
    fv = v - v0
    a = p[v0[:, None], u0[None, :]]
    b = p[v0[:, None], u0[None, :] + 1]
    c = p[v0[:, None] + 1, u0[None, :]]
    d = p[v0[:, None] + 1, u0[None, :] + 1]
    top = a * (1 - fu[None]) + b * fu[None]
    bot = c * (1 - fu[None]) + d * fu[None]
    return top * (1 - fv[:, None]) + bot * fv[:, None]

  return jax.vmap(sample)(masks, u, v)


def neighbour_targets(gt_masks, gt_boxes, gt_valid, rois, matched_gt, output_size: int = 28):
  """Where the *other* ground-truth objects lie in each RoI's frame.

  For each RoI, the union over every valid gt except its matched one of that
  gt's :func:`mask_targets` in the RoI: the pixels that belong to a neighbour,
  which the plain mask target calls background.

  Args:
    gt_masks: [G, M, M] float (0/1) masks cropped to their own box.
    gt_boxes: [G, 4] float32.
    gt_valid: [G] bool (padding rows are never a neighbour).
    rois: [S, 4] float32.
    matched_gt: [S] int32 index into G.
    output_size: static int.
  Returns:
    [S, output_size, output_size] float32 in {0, 1}.
  """
  g = gt_masks.shape[0]
  each = jax.vmap(lambda k: mask_targets(gt_masks, gt_boxes, rois,
                                         jnp.full_like(matched_gt, k), output_size))(
                                             jnp.arange(g))                  # [G, S, out, out]
  other = (jnp.arange(g)[:, None] != matched_gt[None, :]) & jnp.asarray(gt_valid)[:, None]
  return jnp.max(jnp.where(other[..., None, None], each, 0.0), axis=0)
