"""The mask head's two switches for touching objects: the class-agnostic
instance logit and the BCE weight of pixels on a neighbouring object; both
off, the head is the paper's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import tiny_config as tiny
from zsi_jax.modeling.build import build_model, init_variables
from zsi_jax.modeling.zsi import ZSIModel
from zsi_jax.ops import targets

from tests.modeling.test_heads import make_mask_head

D = 16


def test_neighbour_targets_are_the_union_of_the_other_objects():
  rng = np.random.default_rng(0)
  g, m = 5, 20
  masks = (rng.random((g, m, m)) > 0.4).astype(np.float32)
  xy = rng.uniform(0, 40, (g, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(8, 30, (g, 2))], 1).astype(np.float32)
  valid = np.array([True, True, True, True, False])
  rois = np.concatenate([boxes[:4] + rng.uniform(-4, 4, (4, 4)),
                         [[0, 0, 70, 70]]]).astype(np.float32)
  matched = np.array([0, 1, 2, 3, 1], np.int32)
  got = np.asarray(jax.jit(targets.neighbour_targets)(masks, boxes, valid, rois, matched))
  want = np.zeros_like(got)
  for s in range(len(rois)):
    for k in range(g):
      if k != matched[s] and valid[k]:
        one = np.asarray(targets.mask_targets(masks, boxes, rois[s:s + 1], np.array([k])))[0]
        want[s] = np.maximum(want[s], one)
  np.testing.assert_array_equal(got, want)
  assert want.sum() > 0


def test_instance_logit_starts_at_zero_and_adds_a_class_agnostic_map():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(3, 14, 14, 8)), jnp.float32)
  vecs = jnp.asarray(rng.normal(size=(3, 2, D)), jnp.float32)
  plain, with_instance = make_mask_head(semantic_dim=D), make_mask_head(semantic_dim=D,
                                                                       instance_logit=True)
  v_plain = plain.init(jax.random.PRNGKey(0), x)
  v_inst = with_instance.init(jax.random.PRNGKey(0), x)
  # Off, the head has no instance parameters; on, only those are added.
  assert 'instance' not in v_plain['params']
  assert set(v_inst['params']) - set(v_plain['params']) == {'instance'}
  shared = jax.tree_util.tree_map(np.asarray, {k: v for k, v in v_inst['params'].items()
                                               if k != 'instance'})
  jax.tree_util.tree_map(np.testing.assert_array_equal, shared,
                         jax.tree_util.tree_map(np.asarray, v_plain['params']))
  # At initialisation the logits are the plain head's.
  np.testing.assert_array_equal(plain.apply(v_plain, x, vecs)['logits'],
                                with_instance.apply(v_inst, x, vecs)['logits'])
  # Trained, every class's logit moves by the same map of the features O.
  kernel = rng.normal(size=(8, 1)).astype(np.float32)
  p = dict(v_inst['params'], instance={'kernel': kernel, 'bias': np.array([0.3], np.float32)})
  got = with_instance.apply({'params': p}, x, vecs)['logits']
  features = np.asarray(with_instance.apply({'params': p}, x)['features'])
  want = np.asarray(plain.apply(v_plain, x, vecs)['logits']) + (features @ kernel + 0.3)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _batch(hw=64, g=4, m=28):
  """Image 0: two boxes that overlap (neighbours in each other's RoIs); image 1: one object."""
  boxes = np.zeros((2, g, 4), np.float32)
  boxes[0, 0] = [8, 8, 36, 36]
  boxes[0, 1] = [28, 10, 56, 38]
  boxes[1, 0] = [10, 12, 40, 44]
  valid = np.zeros((2, g), bool)
  valid[0, :2] = valid[1, 0] = True
  masks = np.zeros((2, g, m, m), np.uint8)
  masks[:, :, 2:26, 2:26] = 1
  return dict(image=np.random.default_rng(2).normal(size=(2, hw, hw, 3)).astype(np.float32),
              gt_boxes=boxes, gt_classes=np.where(valid, 1, -1).astype(np.int32),
              gt_valid=valid, gt_crowd=np.zeros((2, g), bool),
              gt_masks=masks * valid[..., None, None], input_hw=np.full((2, 2), hw, np.int32))


def _mask_bce(weight, batch):
  cfg = tiny.get_config().model
  cfg.mask_head.neighbour_weight = weight
  vecs = np.random.default_rng(0).normal(size=(6, D)).astype(np.float32)
  vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
  model = build_model(cfg, vecs.mean(0), 3, training=True)
  variables = init_variables(model, jax.random.PRNGKey(0), (64, 64))
  terms, _ = jax.jit(lambda v, b: model.apply(
      v, b, jnp.asarray(vecs), jnp.asarray(np.arange(6) < 3), jax.random.PRNGKey(0), True,
      method=ZSIModel.losses))(variables, batch)
  return float(terms['mask_bce'])


def test_neighbour_weight_scales_only_the_pixels_on_another_object():
  batch = _batch()
  one, three, five = (_mask_bce(w, batch) for w in (1.0, 3.0, 5.0))
  # The loss is affine in the weight: a term on the neighbours' pixels, added (w - 1) times.
  assert three > one
  np.testing.assert_allclose(five - three, three - one, rtol=1e-4)
  # An image whose object has no neighbour: the weight changes nothing.
  alone = _batch()
  for key in ('gt_valid', 'gt_masks', 'gt_classes', 'gt_boxes'):
    alone[key] = alone[key].copy()
  alone['gt_valid'][0] = False
  alone['gt_masks'][0] = 0
  alone['gt_classes'][0] = -1
  assert _mask_bce(4.0, alone) == pytest.approx(_mask_bce(1.0, alone), rel=1e-6)


def _sample_numpy(mask, box, x, y):
  """Bilinear value of a box-framed mask [m, m] at image point (x, y); 0 outside."""
  m = mask.shape[0]
  u = (x - box[0]) / max(box[2] - box[0], 1e-6) * m - 0.5
  v = (y - box[1]) / max(box[3] - box[1], 1e-6) * m - 0.5
  value = 0.0
  for vi, wv in ((np.floor(v), 1 - (v - np.floor(v))), (np.floor(v) + 1, v - np.floor(v))):
    for ui, wu in ((np.floor(u), 1 - (u - np.floor(u))), (np.floor(u) + 1, u - np.floor(u))):
      if 0 <= ui < m and 0 <= vi < m:
        value += wu * wv * mask[int(vi), int(ui)]
  return value


def test_exclusive_masks_equal_a_pixel_loop():
  from zsi_jax.ops import boxes as box_ops
  from zsi_jax.ops.postprocess import exclusive_masks
  rng = np.random.default_rng(3)
  n, m = 6, 8
  xy = rng.uniform(0, 30, (n, 2))
  boxes = np.concatenate([xy, xy + rng.uniform(10, 25, (n, 2))], 1).astype(np.float32)
  boxes[1] = boxes[0] + 0.5                 # a duplicate of detection 0: the same object
  masks = rng.random((n, m, m)).astype(np.float32)
  valid = np.array([True] * (n - 1) + [False])
  scores = np.linspace(0.9, 0.1, n).astype(np.float32)
  got = np.asarray(jax.jit(exclusive_masks, static_argnums=4)(masks, boxes, scores, valid, 0.3))
  iou = np.asarray(box_ops.box_iou(boxes, boxes))
  want = masks.copy()
  for i in range(n):
    for r in range(m):
      for c in range(m):
        x = boxes[i, 0] + (c + 0.5) / m * (boxes[i, 2] - boxes[i, 0])
        y = boxes[i, 1] + (r + 0.5) / m * (boxes[i, 3] - boxes[i, 1])
        rivals = [j for j in range(n) if j != i and valid[i] and valid[j] and iou[i, j] < 0.5
                  and scores[j] >= 0.3]
        best = max([_sample_numpy(masks[j], boxes[j], x, y) for j in rivals], default=0.0)
        if masks[i, r, c] < best:
          want[i, r, c] = 0.0
  np.testing.assert_allclose(got, want, atol=1e-5)
  assert (want == 0).sum() > 0
  # No detection strong enough to claim a pixel: the masks are unchanged.
  np.testing.assert_array_equal(exclusive_masks(masks, boxes, scores * 0.1, valid, 0.3), masks)
  # Only the first two may claim pixels: detections 2..4 keep what they lose only to each other.
  top2 = np.asarray(exclusive_masks(masks, boxes, scores, valid, 0.3, rivals=2))
  assert (top2 >= got - 1e-6).all() and (top2 > got).any()


def test_touching_objects_each_keep_their_own_pixels():
  from zsi_jax.ops.postprocess import exclusive_masks
  # Object A covers x in [0, 15), B [15, 30); the boxes are too wide, and each
  # mask (columns of 5 px) spills over the other object with less probability.
  boxes = np.array([[0, 0, 20, 10], [10, 0, 30, 10]], np.float32)
  masks = np.zeros((2, 4, 4), np.float32)
  masks[0] = np.array([0.9, 0.9, 0.9, 0.6])[None]         # A's box: x 0-5, 5-10, 10-15, 15-20
  masks[1] = np.array([0.3, 0.9, 0.9, 0.9])[None]         # B's box: x 10-15, 15-20, 20-25, 25-30
  out = np.asarray(exclusive_masks(masks, boxes, np.ones(2, np.float32), np.array([True, True]), 0.5))
  np.testing.assert_array_equal(out[0], np.broadcast_to(np.float32([0.9, 0.9, 0.9, 0.0]), (4, 4)))
  np.testing.assert_array_equal(out[1], np.broadcast_to(np.float32([0.0, 0.9, 0.9, 0.9]), (4, 4)))
  # The same boxes taken for one object (IoU 1/3 at or above the threshold): unchanged.
  same = np.asarray(exclusive_masks(masks, boxes, np.ones(2, np.float32), np.array([True, True]), 0.5,
                                    same_object_iou=0.3))
  np.testing.assert_array_equal(same, masks)
