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
