"""Box ops against torchvision."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision
from hypothesis import given, settings, strategies as st
from torchvision.models.detection._utils import BoxCoder

from zsi_jax.ops import boxes
from tests.ops.helpers import random_boxes


# Hypothesis draws many box counts: as in test_nms.py, the boxes are padded to
# a fixed size and the ops run under jit, so each op compiles once instead of
# every example running op by op. The ops are pairwise / per box, so the rows
# and columns of the real boxes do not depend on the padding; only those are
# compared with torchvision.
_PAD = 40
_PAD_BOX = np.array([1.0, 2.0, 3.0, 5.0], np.float32)  # any box of positive size


def _padded(x, size):
  return np.concatenate([x, np.tile(_PAD_BOX, (size - len(x), 1))])


@jax.jit
def _iou_area_clip(a, b):
  return boxes.box_iou(a, b), boxes.box_area(a), boxes.clip_boxes(a, (60, 80))


@jax.jit
def _encode_decode(rois, gts, deltas):
  enc = boxes.encode(rois, gts)
  return enc, boxes.decode(rois, deltas), boxes.decode(rois, enc)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, _PAD), st.integers(1, _PAD), st.integers(0, 2**31 - 1))
def test_iou_area_clip_match_torchvision(n, m, seed):
  rng = np.random.default_rng(seed)
  a = random_boxes(rng, n)
  b = random_boxes(rng, m)
  iou, area, clipped = _iou_area_clip(jnp.asarray(_padded(a, _PAD)), jnp.asarray(_padded(b, _PAD)))
  np.testing.assert_allclose(np.asarray(iou)[:n, :m],
                             torchvision.ops.box_iou(torch.tensor(a), torch.tensor(b)).numpy(),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(area)[:n],
                             torchvision.ops.box_area(torch.tensor(a)).numpy(), rtol=1e-5)
  np.testing.assert_allclose(np.asarray(clipped)[:n],
                             torchvision.ops.clip_boxes_to_image(torch.tensor(a), (60, 80)).numpy())


def test_iou_of_padding_is_zero_not_nan():
  z = jnp.zeros((3, 4))
  iou = boxes.box_iou(z, z)
  assert np.all(np.asarray(iou) == 0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_encode_decode_match_torchvision_boxcoder(n, seed):
  rng = np.random.default_rng(seed)
  rois = random_boxes(rng, n)
  gts = random_boxes(rng, n)
  # Large deltas exercise the dw/dh clamp.
  deltas = rng.normal(scale=20.0, size=(n, 4)).astype(np.float32)
  ours, ours_dec, back = (np.asarray(x)[:n] for x in _encode_decode(
      jnp.asarray(_padded(rois, 30)), jnp.asarray(_padded(gts, 30)),
      jnp.asarray(np.concatenate([deltas, np.zeros((30 - n, 4), np.float32)]))))
  coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0), bbox_xform_clip=math.log(1000.0 / 16))
  ref = coder.encode_single(torch.tensor(gts), torch.tensor(rois)).numpy()
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
  ref_dec = coder.decode_single(torch.tensor(deltas), torch.tensor(rois)).numpy()
  np.testing.assert_allclose(ours_dec, ref_dec, rtol=1e-4, atol=1e-3)
  # Round trip, for the pairs the dw/dh clamp leaves alone: a target more than
  # 1000/16 times as wide or tall as its roi (roi sides go down to 0.5, target
  # sides up to 40; n=30, seed=1441 draws one) decodes to the clamped size.
  log_ratio = np.log((gts[:, 2:] - gts[:, :2]) / (rois[:, 2:] - rois[:, :2]))
  inside = np.all(log_ratio < boxes.DEFAULT_MAX_RATIO - 1e-3, axis=1)
  np.testing.assert_allclose(back[inside], gts[inside], rtol=1e-4, atol=1e-3)
  # Clamped or not, every pair comes out as torchvision decodes the same deltas.
  ref_back = coder.decode_single(torch.tensor(ours), torch.tensor(rois)).numpy()
  np.testing.assert_allclose(back, ref_back, rtol=1e-4, atol=1e-3)


def test_jit_and_vmap():
  rng = np.random.default_rng(0)
  a = jnp.asarray(np.stack([random_boxes(rng, 5) for _ in range(3)]))
  b = jnp.asarray(np.stack([random_boxes(rng, 7) for _ in range(3)]))
  iou = jax.jit(jax.vmap(boxes.box_iou))(a, b)
  assert iou.shape == (3, 5, 7)
  np.testing.assert_allclose(np.asarray(iou[1]), np.asarray(boxes.box_iou(a[1], b[1])), rtol=1e-6)
  d = jax.jit(jax.vmap(boxes.encode))(a, a)
  np.testing.assert_allclose(np.asarray(d), 0.0, atol=1e-6)
