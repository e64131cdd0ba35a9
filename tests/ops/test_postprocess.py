"""postprocess_detections against torchvision's RoIHeads logic; mask pasting against a pixel loop."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision
from hypothesis import given, settings, strategies as st
from torchvision.models.detection._utils import BoxCoder

from zsi_jax.ops.postprocess import (paste_masks, paste_masks_padded, postprocess_detections,
                                     to_original_boxes)


def _reference(rois, valid, scores, deltas, hw, thr, nms_thr, max_det, pre):
  """torchvision RoIHeads.postprocess_detections steps, plus a pre-NMS top-k."""
  r, k = scores.shape
  coder = BoxCoder((10., 10., 5., 5.))
  d = torch.from_numpy(deltas).reshape(r, -1)
  b = coder.decode(d, [torch.from_numpy(rois)]).reshape(r, k, 4)
  b = torchvision.ops.clip_boxes_to_image(b, hw).reshape(-1, 4)
  s = torch.from_numpy(scores).reshape(-1)
  lab = torch.arange(k).repeat(r)
  ri = torch.arange(r).repeat_interleave(k)
  keep = (s > thr) & torch.from_numpy(valid)[ri]
  keep &= ((b[:, 2] - b[:, 0]) >= 1e-2) & ((b[:, 3] - b[:, 1]) >= 1e-2)
  b, s, lab, ri = b[keep], s[keep], lab[keep], ri[keep]
  order = torch.argsort(s, descending=True, stable=True)[:pre]
  b, s, lab, ri = b[order], s[order], lab[order], ri[order]
  keep = torchvision.ops.batched_nms(b, s, lab, nms_thr)[:max_det]
  return b[keep].numpy(), s[keep].numpy(), lab[keep].numpy(), ri[keep].numpy()


def _inputs(rng, r, k, low_scores=False):
  c = rng.uniform(10, 90, (r, 2))
  wh = rng.uniform(5, 40, (r, 2))
  rois = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
  scores = rng.dirichlet(np.ones(k + 1), r)[:, 1:].astype(np.float32)
  if low_scores:
    scores *= 0.04
  deltas = rng.normal(size=(r, k, 4)).astype(np.float32)
  valid = rng.uniform(size=r) < 0.9
  return rois, valid, scores, deltas


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([(30, 3, 100), (80, 4, 20)]), st.booleans())
def test_postprocess_matches_torchvision(seed, shape, agnostic):
  rng = np.random.default_rng(seed)
  r, k, max_det = shape
  rois, valid, scores, deltas = _inputs(rng, r, k)
  if agnostic:
    deltas = np.repeat(deltas[:, :1], k, 1)
  hw = (90, 100)
  f = jax.jit(lambda *a: postprocess_detections(*a, max_detections=max_det, pre_nms_topk=150))
  arg_d = deltas[:, 0] if agnostic else deltas
  out = jax.tree.map(np.asarray, f(rois, valid, scores, arg_d, hw))
  rb, rs, rl, ri = _reference(rois, valid, scores, deltas, hw, 0.05, 0.5, max_det, 150)
  n = len(rs)
  assert out['valid'].sum() == n and out['valid'][:n].all()
  np.testing.assert_allclose(out['scores'][:n], rs, rtol=1e-6)
  np.testing.assert_array_equal(out['classes'][:n], rl)
  np.testing.assert_array_equal(out['roi_index'][:n], ri)
  np.testing.assert_allclose(out['boxes'][:n], rb, atol=1e-3)
  assert (out['classes'][n:] == -1).all() and (out['roi_index'][n:] == -1).all()


def test_postprocess_no_detection_and_vmap():
  rng = np.random.default_rng(0)
  rois, valid, scores, deltas = _inputs(rng, 20, 3, low_scores=True)
  out = jax.vmap(lambda s: postprocess_detections(rois, valid, s, deltas, (100, 100)))(
      jnp.stack([scores, scores]))
  assert out['boxes'].shape == (2, 100, 4)
  assert not np.asarray(out['valid']).any()
  assert (np.asarray(out['classes']) == -1).all()


def _paste_loop(mask, box, hw):
  """Per-pixel reference: pixel centre -> mask frame (half-pixel), bilinear, zero outside.

  Returns the sampled probabilities [H, W] (0 outside the mask).
  """
  m = mask.shape[0]
  x1, y1, x2, y2 = box
  out = np.zeros(hw)
  p = np.pad(mask, 1)
  for y in range(hw[0]):
    for x in range(hw[1]):
      u = (x + 0.5 - x1) / (x2 - x1) * m - 0.5 + 1
      v = (y + 0.5 - y1) / (y2 - y1) * m - 0.5 + 1
      if u <= 0 or v <= 0 or u >= m + 1 or v >= m + 1:
        continue
      u0, v0 = int(np.floor(u)), int(np.floor(v))
      fu, fv = u - u0, v - v0
      out[y, x] = ((p[v0, u0] * (1 - fu) + p[v0, u0 + 1] * fu) * (1 - fv)
                   + (p[v0 + 1, u0] * (1 - fu) + p[v0 + 1, u0 + 1] * fu) * fv)
  return out


def _assert_thresholded(got, probs, thr, band):
  """got == (probs >= thr), except where probs is within ``band`` of thr (summation order)."""
  clear = np.abs(probs - thr) > band
  np.testing.assert_array_equal(got[clear], probs[clear] >= thr)


def _random_pasting(seed, n=3, m=7):
  rng = np.random.default_rng(seed)
  masks = rng.uniform(size=(n, m, m)).astype(np.float32)
  xy = rng.uniform(-5, 30, (n, 2))
  wh = rng.uniform(0.5, 20, (n, 2))
  boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
  return masks, boxes


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_paste_masks_equals_pixel_loop(seed):
  hw = (30, 40)
  masks, boxes = _random_pasting(seed)
  got = paste_masks(masks, boxes, hw)
  assert got.shape == (3, 30, 40) and got.dtype == bool
  for i in range(3):
    _assert_thresholded(got[i], _paste_loop(masks[i], boxes[i], hw), 0.5, 1e-9)


_paste_padded = jax.jit(paste_masks_padded, static_argnames='out_hw')


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000))
def test_paste_masks_padded_equals_pixel_loop(seed):
  """Device paste: same samples in float32; invalid slots, degenerate boxes and the
  padding beyond the image's true size stay False."""
  masks, boxes = _random_pasting(seed, n=4)
  boxes[3, 2] = boxes[3, 0]                       # zero width: nothing pasted
  valid = np.array([True, True, False, True])
  image_hw = np.array([27, 33])                   # true size inside a 30 x 40 canvas
  got = np.asarray(_paste_padded(masks, boxes, valid, image_hw, out_hw=(30, 40)))
  assert got.shape == (4, 30, 40) and got.dtype == bool
  assert not got[2].any() and not got[3].any()
  assert not got[:, 27:].any() and not got[:, :, 33:].any()
  for i in range(2):
    _assert_thresholded(got[i, :27, :33], _paste_loop(masks[i], boxes[i], (27, 33)), 0.5, 1e-5)


def test_paste_masks_padded_equals_host_at_mask_resolution():
  """28 x 28 masks, 50 detections, image 97 x 131: device and host pastes agree
  on all but a handful of near-threshold pixels."""
  rng = np.random.default_rng(1)
  masks = rng.uniform(size=(50, 28, 28)).astype(np.float32)
  xy = rng.uniform(-10, 120, (50, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(0.3, 80, (50, 2))], 1).astype(np.float32)
  host = paste_masks(masks, boxes, (97, 131))
  dev = np.asarray(_paste_padded(masks, boxes, np.ones(50, bool), np.array([97, 131]),
                                 out_hw=(97, 131)))
  assert host.sum() > 10_000
  assert (host != dev).sum() <= 5


def test_paste_masks_close_to_torchvision():
  """torchvision pads the mask by one pixel and expands the box; agreement > 95% of the box."""
  from torchvision.models.detection.roi_heads import paste_masks_in_image
  yy, xx = np.mgrid[0:28, 0:28] + 0.5
  masks = np.stack([1.0 / (1 + np.exp(-(6 - np.hypot(yy - 14, xx - 14 + s)) * 2))
                    for s in (0, 3)]).astype(np.float32)
  boxes = np.array([[10, 12, 70, 60], [30, 5, 90, 50]], np.float32)
  got = paste_masks(masks, boxes, (80, 100))
  ref = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes),
                             (80, 100))[:, 0].numpy() >= 0.5
  for i in range(2):
    x1, y1, x2, y2 = boxes[i].astype(int)
    assert (got[i][y1:y2, x1:x2] == ref[i][y1:y2, x1:x2]).mean() > 0.95
    assert not got[i][:, :x1 - 3].any() and not got[i][:, x2 + 3:].any()


def test_boxes_back_to_original_and_flip():
  b = np.array([[10.0, 20.0, 50.0, 60.0]])
  np.testing.assert_allclose(to_original_boxes(b, 2.0, (100, 100)), [[5, 10, 25, 30]])
  np.testing.assert_allclose(to_original_boxes(b, 2.0, (100, 100), True, 200),
                             [[75, 10, 95, 30]])
  np.testing.assert_allclose(to_original_boxes(np.array([[-5., 0, 500, 90]]), 1.0, (80, 100)),
                             [[0, 0, 100, 80]])
