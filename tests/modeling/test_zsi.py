"""The whole ZSI model at tiny scale: shapes, one compilation, Sync-bg gradients,
padding, mask-RoI buckets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import tiny_config as tiny
from zsi_jax.modeling.build import build_model, init_variables
from zsi_jax.modeling.class_space import class_matrix, project_through_seen
from zsi_jax.modeling.zsi import ZSIModel

D = 16
K_MAX = 6


def make_batch(rng, b=2, g=4, hw=64, m=28, n_real=(2, 1)):
  boxes = np.zeros((b, g, 4), np.float32)
  classes = np.full((b, g), -1, np.int32)
  valid = np.zeros((b, g), bool)
  for i in range(b):
    for j in range(n_real[i]):
      x, y = rng.uniform(2, hw - 30, 2)
      w, h = rng.uniform(12, 26, 2)
      boxes[i, j] = [x, y, x + w, y + h]
      classes[i, j] = rng.integers(0, 3)
      valid[i, j] = True
  masks = np.zeros((b, g, m, m), np.uint8)
  masks[:, :, 4:24, 6:22] = 1
  return dict(image=rng.normal(size=(b, hw, hw, 3)).astype(np.float32), gt_boxes=boxes,
              gt_classes=classes, gt_valid=valid, gt_crowd=np.zeros((b, g), bool),
              gt_masks=masks * valid[..., None, None],
              input_hw=np.full((b, 2), hw, np.int32))


def tiny_model(cfg, vecs, training=True):
  return build_model(cfg, vecs.mean(0), 3, training=training)


@pytest.fixture(scope='module')
def setup():
  cfg = tiny.get_config().model
  rng = np.random.default_rng(0)
  vecs = rng.normal(size=(K_MAX, D)).astype(np.float32)
  vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
  model = tiny_model(cfg, vecs)
  variables = init_variables(model, jax.random.PRNGKey(0), (64, 64))
  return cfg, model, variables, vecs


def _loss_fn(model, trace_counter=None):
  def f(params, rest, batch, cv, cvalid, key):
    if trace_counter is not None:
      trace_counter.append(1)
    terms, aux = model.apply({'params': params, **rest}, batch, cv, cvalid, key, True,
                             method=ZSIModel.losses)
    return terms, aux
  return f


def test_losses_finite_and_compiled_once_for_any_class_list(setup):
  cfg, model, variables, vecs = setup
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}
  traces = []
  f = jax.jit(_loss_fn(model, traces))
  batch = make_batch(np.random.default_rng(1))
  valid3 = np.array([1, 1, 1, 0, 0, 0], bool)
  terms, aux = f(params, rest, batch, jnp.asarray(vecs), jnp.asarray(valid3), jax.random.PRNGKey(0))
  for k in ('total', 'rpn_cls', 'rpn_box', 'det_cls', 'det_box', 'det_recon', 'mask_bce',
            'mask_recon'):
    assert np.isfinite(float(terms[k])), k
  assert float(aux['num_pos_rois']) > 0 and float(aux['num_mask_rois']) > 0
  # Another class list (other values, other K within K_max): no recompilation.
  vecs2 = np.roll(vecs, 1, axis=0) * 0.5
  valid5 = np.array([1, 1, 1, 1, 1, 0], bool)
  terms2, _ = f(params, rest, batch, jnp.asarray(vecs2), jnp.asarray(valid5),
                jax.random.PRNGKey(0))
  assert len(traces) == 1
  assert float(terms2['det_cls']) != float(terms['det_cls'])


def _w_bf_gradient(model, variables, vecs, batch):
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}

  def total(p):
    terms, _ = model.apply({'params': p, **rest}, batch, jnp.asarray(vecs),
                           jnp.asarray(np.arange(K_MAX) < 3), jax.random.PRNGKey(0), True,
                           method=ZSIModel.losses)
    return terms['total']

  return jax.jit(jax.grad(total))(params)['rpn']['W_bf']


def test_sync_bg_gradient_switch(setup):
  # The RPN's own loss trains every row of W_bf. With Sync-bg gradients the
  # heads' losses also reach v_b, the mean of the background rows: those rows'
  # gradients change, the foreground rows' do not.
  cfg, _, variables, vecs = setup
  grads = {}
  for gradients in (True, False):
    c = cfg.copy_and_resolve_references()
    c.sync_bg.gradients = gradients
    grads[gradients] = np.asarray(_w_bf_gradient(tiny_model(c, vecs), variables, vecs,
                                                 make_batch(np.random.default_rng(2))))
  with_heads, rpn_only = grads[True], grads[False]
  assert np.abs(with_heads[:, 0] - rpn_only[:, 0]).max() > 1e-3 * np.abs(rpn_only[:, 0]).max()
  np.testing.assert_allclose(with_heads[:, 1], rpn_only[:, 1], rtol=1e-5, atol=1e-8)
  # The heads add the same gradient to every background row (v_b is their mean).
  head_part = with_heads[:, 0] - rpn_only[:, 0]
  np.testing.assert_allclose(head_part, np.broadcast_to(head_part[:1], head_part.shape),
                             rtol=1e-3, atol=1e-6)


def test_padded_ground_truth_contributes_nothing(setup):
  _, model, variables, vecs = setup
  batch = make_batch(np.random.default_rng(3), g=4)
  wider = {k: v for k, v in batch.items()}
  # Add padded instances holding garbage: a big box and a class id.
  pad = lambda x, v: np.concatenate([x, np.full(x[:, :2].shape, v, x.dtype)], axis=1)
  wider['gt_boxes'] = pad(batch['gt_boxes'], 5.0)
  wider['gt_classes'] = pad(batch['gt_classes'], -1)
  wider['gt_valid'] = pad(batch['gt_valid'], False)
  wider['gt_crowd'] = pad(batch['gt_crowd'], False)
  wider['gt_masks'] = pad(batch['gt_masks'], 1)
  f = jax.jit(_loss_fn(model))
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}
  a, _ = f(params, rest, batch, vecs, np.arange(K_MAX) < 3, jax.random.PRNGKey(0))
  b, _ = f(params, rest, wider, vecs, np.arange(K_MAX) < 3, jax.random.PRNGKey(0))
  for k in a:
    np.testing.assert_allclose(float(a[k]), float(b[k]), rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.parametrize('scoring', ['direct', 'projected'])
def test_detect_outputs(setup, scoring):
  # Fixed-size outputs, and masks equal to the semantic map [N, 28, 28, D]
  # compared with the class vector (detect folds the encoder into one vector
  # per detection), projected through 2 seen vectors that are not among the
  # 4 targets.
  cfg, model, variables, vecs = setup
  batch = make_batch(np.random.default_rng(4))
  seen = np.roll(vecs, -4, axis=0)
  cm, sm = np.arange(K_MAX) < 4, np.arange(K_MAX) < 2
  out = jax.jit(lambda v, im, hw: model.apply(
      v, im, hw, vecs, cm, seen_vectors=seen, seen_valid=sm, scoring=scoring,
      method=ZSIModel.detect))(variables, batch['image'], batch['input_hw'])
  n = cfg.test.max_detections
  assert out['boxes'].shape == (2, n, 4) and out['masks'].shape == (2, n, 28, 28)
  cls = np.asarray(out['classes'])
  valid = np.asarray(out['valid'])
  assert valid.sum() > 0
  assert np.all((cls[valid] >= 0) & (cls[valid] < 4)) and np.all(cls[~valid] == -1)
  m = np.asarray(out['masks'])
  assert np.all((m >= 0) & (m <= 1))

  def reference(module, images, boxes, classes):
    feats = module.features(images, False)
    v_b = module.rpn(feats).v_b
    sem = module.mask_head.on_boxes(feats, boxes)['semantic']
    mat, _ = class_matrix(v_b, vecs, cm)
    ws, ws_valid = class_matrix(v_b, seen, sm)
    if scoring == 'projected':
      sem = project_through_seen(sem, ws, ws_valid)
    logits = jnp.einsum('nhwd,nd->nhw', sem, mat[jnp.clip(classes, 0, None).reshape(-1) + 1])
    return jax.nn.sigmoid(logits).reshape(classes.shape + (28, 28))

  ref = jax.jit(lambda v, im, b, c: model.apply(v, im, b, c, method=reference))(
      variables, batch['image'], out['boxes'], out['classes'])
  np.testing.assert_allclose(m[valid], np.asarray(ref)[valid], rtol=1e-4, atol=1e-5)


def test_mask_roi_buckets_and_pieces_leave_losses_and_gradients_unchanged(setup):
  # The mask loss runs in the smallest slot bucket holding the batch's
  # positives, in pieces run one at a time, its gradients computed inside each
  # piece; losses and gradients must be those of the full cap in one piece (no
  # positive dropped or counted twice).
  cfg, _, variables, vecs = setup
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}
  batch = make_batch(np.random.default_rng(5), n_real=(1, 1))
  out = {}
  # (buckets, piece slots, skip empty pieces): (16,) slots whole; (8, 16)
  # whole; (8, 16) in pieces of 3 (3 pieces of 3 for 8 slots, the last partly
  # beyond the bucket), those holding positives or all three.
  for setting in ((1, 0, True), (2, 0, True), (2, 3, True), (2, 3, False)):
    c = cfg.copy_and_resolve_references()
    c.roi_sampling.num_samples = 64
    c.mask_head.max_rois_per_image = 16
    c.mask_head.roi_buckets, c.mask_head.loss_piece_slots, c.mask_head.skip_empty_pieces = setting
    model = tiny_model(c, vecs)

    def loss(p):
      terms, aux = model.apply({'params': p, **rest}, batch, jnp.asarray(vecs),
                               jnp.asarray(np.arange(K_MAX) < 3), jax.random.PRNGKey(0), True,
                               method=ZSIModel.losses)
      return 3.0 * terms['total'], (terms, aux)   # a cotangent other than 1

    (_, (terms, aux)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    out[setting] = terms, aux, grads
  t1, a1, g1 = out[(1, 0, True)]
  positives = int(a1['num_mask_rois'])
  assert 3 < positives <= 8, positives              # so the bucket below the cap (16) runs
  # The mask head gets gradients (so the comparison below covers them).
  assert float(jnp.abs(g1['mask_head']['conv1']['kernel']).sum()) > 0
  for setting in ((2, 0, True), (2, 3, True), (2, 3, False)):
    t2, a2, g2 = out[setting]
    assert int(a2['mask_bucket']) == 0 and int(a2['num_mask_rois']) == positives
    # The slots run: the 8-slot bucket whole, or the 3-slot pieces holding the
    # positives of the image with most (between half the batch's and all).
    slots = int(a2['mask_slots'])
    if setting[1] == 0:
      assert slots == 8
    elif not setting[2]:
      assert slots == 9
    else:
      most_low, most_high = -(-positives // 2), positives
      assert slots % 3 == 0 and 3 * -(-most_low // 3) <= slots <= 3 * -(-most_high // 3), slots
    for k in t1:
      np.testing.assert_allclose(float(t2[k]), float(t1[k]), rtol=1e-5, atol=1e-6,
                                 err_msg=f'{setting} {k}')
    # Summation order differs between the settings: float32 noise relative to
    # each leaf's scale.
    jax.tree_util.tree_map_with_path(
        lambda path, a, b: np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))) + 1e-8,
            err_msg=f'{setting} {jax.tree_util.keystr(path)}'), g2, g1)


def test_seen_calibration(setup):
  # GZSI list: 3 seen and 3 unseen targets. gamma 0 is no calibration at all
  # (bit for bit); gamma 1 leaves only unseen detections, gamma -1 only seen
  # (score threshold 0, so every class would pass on its score).
  cfg, _, variables, vecs = setup
  c = cfg.copy_and_resolve_references()
  c.test.score_threshold = 0.0
  model = tiny_model(c, vecs, training=False)
  batch = make_batch(np.random.default_rng(6))
  seen, seen_valid = vecs, np.arange(K_MAX) < 3
  detect = jax.jit(lambda v, im, hw, gamma: model.apply(
      v, im, hw, vecs, np.ones(K_MAX, bool), seen_vectors=seen, seen_valid=seen_valid,
      seen_calibration=gamma, method=ZSIModel.detect))
  plain = jax.jit(lambda v, im, hw: model.apply(v, im, hw, vecs, np.ones(K_MAX, bool),
                                                method=ZSIModel.detect))(
      variables, batch['image'], batch['input_hw'])
  out = {g: jax.device_get(detect(variables, batch['image'], batch['input_hw'], np.float32(g)))
         for g in (0.0, 1.0, -1.0)}
  for k in plain:
    np.testing.assert_array_equal(out[0.0][k], np.asarray(plain[k]), err_msg=k)
  for gamma, group in ((1.0, range(3, 6)), (-1.0, range(3))):
    valid, classes = out[gamma]['valid'], out[gamma]['classes']
    assert valid.sum() > 0 and set(classes[valid].tolist()) <= set(group), (gamma, classes)
  # Without seen vectors there is nothing to calibrate.
  model_no_seen = jax.jit(lambda v, im, hw: model.apply(
      v, im, hw, vecs, np.ones(K_MAX, bool), seen_calibration=1.0, method=ZSIModel.detect))
  np.testing.assert_array_equal(
      np.asarray(model_no_seen(variables, batch['image'], batch['input_hw'])['classes']),
      np.asarray(plain['classes']))
