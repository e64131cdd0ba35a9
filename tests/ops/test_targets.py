"""rpn_targets, sample_rois and mask_targets."""
import jax
import numpy as np
import torch
import torchvision
from hypothesis import given, settings, strategies as st

from zsi_jax.ops import boxes as box_ops
from zsi_jax.ops import targets


def _random_boxes(rng, n, size=64.0):
  xy = rng.uniform(0, size * 0.7, (n, 2))
  wh = rng.uniform(4, size * 0.5, (n, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_rpn_targets_properties(seed):
  rng = np.random.default_rng(seed)
  anchors = _random_boxes(rng, 200)
  anchor_valid = rng.uniform(size=200) < 0.9
  gt = _random_boxes(rng, 4)
  gt_valid = np.array([True, True, True, False])
  gt_crowd = np.array([False, False, rng.uniform() < 0.5, False])
  cfg = targets.RpnTargetConfig(num_samples=64)
  f = jax.jit(lambda k: targets.rpn_targets(k, anchors, anchor_valid, gt, gt_valid, gt_crowd, cfg))
  out = jax.tree.map(np.asarray, f(jax.random.PRNGKey(seed)))
  lab = out['labels']
  assert ((lab >= 0) <= anchor_valid).all()                  # invalid anchors never sampled
  assert (lab >= 0).sum() <= 64 and (lab == 1).sum() <= 32
  iou = np.asarray(box_ops.box_iou(anchors, gt)) * anchor_valid[:, None]
  matchable = gt_valid & ~gt_crowd
  best = np.where(matchable[None], iou, -1).max(1)
  gt_best = np.where(matchable[None], iou, -1).max(0)
  low_q = ((iou == gt_best[None]) & matchable[None] & (gt_best[None] >= 0.3)).any(1)
  assert ((lab == 1) <= ((best >= 0.7) | low_q)).all()
  assert ((lab == 0) <= (best < 0.3)).all()
  np.testing.assert_array_equal(out['box_weights'], (lab == 1).astype(np.float32))
  pos = np.nonzero(lab == 1)[0]
  if len(pos):
    m = np.where(matchable[None], iou, -1).argmax(1)[pos]
    dec = np.asarray(box_ops.decode(anchors[pos], out['box_targets'][pos], (1., 1., 1., 1.)))
    np.testing.assert_allclose(dec, gt[m], atol=1e-3)


def test_rpn_targets_crowd_never_positive_and_covered_anchors_ignored():
  gt = np.array([[10, 10, 50, 50]], np.float32)
  anchors = np.array([[10, 10, 50, 50], [20, 20, 30, 30], [100, 100, 120, 120]], np.float32)
  out = targets.rpn_targets(jax.random.PRNGKey(0), anchors, np.ones(3, bool), gt,
                            np.array([True]), np.array([True]), targets.RpnTargetConfig())
  np.testing.assert_array_equal(np.asarray(out['labels']), [-1, -1, 0])


def test_low_quality_match_ignores_border_anchors():
  gt = np.array([[0, 0, 20, 20]], np.float32)
  anchors = np.array([[0, 0, 20, 20], [0, 0, 30, 32], [50, 50, 60, 60]], np.float32)
  valid = np.array([False, True, True])
  out = targets.rpn_targets(jax.random.PRNGKey(0), anchors, valid, gt, np.array([True]),
                            np.array([False]), targets.RpnTargetConfig())
  # IoU(anchor 1, gt) = 400/960 < 0.7, but it is the best valid anchor.
  np.testing.assert_array_equal(np.asarray(out['labels']), [-1, 1, 0])


def test_sample_rois_adds_gt_and_vmaps():
  rng = np.random.default_rng(0)
  props = _random_boxes(rng, 2 * 50).reshape(2, 50, 4)
  pvalid = np.ones((2, 50), bool)
  gt = _random_boxes(rng, 2 * 3).reshape(2, 3, 4)
  classes = np.array([[4, 7, -1], [0, 2, 1]], np.int32)
  gvalid = classes >= 0
  crowd = np.zeros((2, 3), bool)
  cfg = targets.RoiSamplingConfig(num_samples=32)
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  out = jax.jit(jax.vmap(lambda k, p, pv, g, c, gv, cr: targets.sample_rois(
      k, p, pv, g, c, gv, cr, cfg)))(keys, props, pvalid, gt, classes, gvalid, crowd)
  out = jax.tree.map(np.asarray, out)
  assert out['rois'].shape == (2, 32, 4)
  for b in range(2):
    lab, v = out['labels'][b], out['valid'][b]
    np.testing.assert_array_equal(v, lab >= 0)
    pos = lab > 0
    assert pos.sum() <= 8
    # Every valid gt is a candidate with IoU 1, so positives exist.
    assert pos.sum() >= 1
    np.testing.assert_array_equal(lab[pos], classes[b][out['matched_gt'][b][pos]] + 1)
    iou = np.asarray(box_ops.box_iou(out['rois'][b], gt[b]))
    iou = np.where(gvalid[b][None], iou, -1)
    assert (iou[pos].max(1) >= 0.5).all()
    assert (iou[lab == 0].max(1) < 0.5).all()
    dec = np.asarray(box_ops.decode(out['rois'][b][pos], out['box_targets'][b][pos]))
    np.testing.assert_allclose(dec, gt[b][out['matched_gt'][b][pos]], atol=1e-2)


def _blob_mask(rng, h, w):
  yy, xx = np.mgrid[0:h, 0:w] + 0.5
  cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
  ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
  ang = np.arctan2(yy - cy, xx - cx)
  r = 1 + 0.25 * np.sin(3 * ang + rng.uniform(0, 6))
  return (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < r ** 2).astype(np.float32)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_mask_targets_match_full_resolution_roi_align(seed):
  """Reference: torchvision roi_align(aligned=True) on the full-image mask, >= 0.5.

  The input is the full mask crop-resized (itself by roi_align) to M x M, so the
  result is resampled twice; boundary pixels may flip. Tolerance: pixel
  agreement > 95% and IoU > 0.9 per RoI.
  """
  rng = np.random.default_rng(seed)
  h = w = 128
  full = _blob_mask(rng, h, w)
  ys, xs = np.nonzero(full)
  gt = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
  m = 112
  ft = torch.from_numpy(full)[None, None]
  crop = torchvision.ops.roi_align(ft, [torch.from_numpy(gt)], m, 1.0, 2, aligned=True)[0, 0]
  crop = (crop >= 0.5).float().numpy()
  jitter = rng.uniform(-0.2, 0.2, (6, 4)) * (gt[0, 2:] - gt[0, :2]).repeat(2)
  rois = (gt + jitter).astype(np.float32)
  got = np.asarray(jax.jit(targets.mask_targets)(crop[None], gt, rois, np.zeros(6, np.int32)))
  ref = torchvision.ops.roi_align(ft, [torch.from_numpy(rois)], 28, 1.0, 2, aligned=True)
  ref = (ref[:, 0] >= 0.5).numpy()
  assert got.shape == (6, 28, 28)
  for i in range(6):
    g, r = got[i] > 0.5, ref[i]
    assert (g == r).mean() > 0.95
    if r.sum() > 20:
      assert (g & r).sum() / (g | r).sum() > 0.9
