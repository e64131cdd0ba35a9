"""The whole ZSI model at tiny scale: shapes, one compilation, Sync-bg gradients, padding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from zsi_jax.modeling.mask_head import mask_logits_per_roi
from zsi_jax.modeling.zsi import (ZSIModel, class_matrix, init_variables, mask_roi_buckets,
                                  project_through_seen)

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


@pytest.fixture(scope='module')
def setup():
  cfg = tiny.get_config().model
  rng = np.random.default_rng(0)
  vecs = rng.normal(size=(K_MAX, D)).astype(np.float32)
  vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
  bg = vecs.mean(0)
  model = ZSIModel(config=cfg, background_init=tuple(bg.tolist()), num_train_classes=0)
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


def _head_loss_grad_wrt_w_bf(model, variables, vecs, batch):
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}

  def head_losses(p):
    terms, _ = model.apply({'params': p, **rest}, batch, jnp.asarray(vecs),
                           jnp.asarray(np.arange(K_MAX) < 3), jax.random.PRNGKey(0), True,
                           method=ZSIModel.losses)
    # Only the heads' terms: the RPN's own loss always trains W_bf.
    return terms['det_cls'] + terms['mask_bce']

  return jax.jit(jax.grad(head_losses))(params)['rpn']['W_bf']


@pytest.mark.parametrize('gradients', [True, False])
def test_sync_bg_gradient_switch(setup, gradients):
  cfg, _, variables, vecs = setup
  cfg = cfg.copy_and_resolve_references()
  cfg.sync_bg.gradients = gradients
  model = ZSIModel(config=cfg, background_init=tuple(vecs.mean(0).tolist()))
  g = _head_loss_grad_wrt_w_bf(model, variables, vecs, make_batch(np.random.default_rng(2)))
  bg_grad = float(jnp.abs(g[:, 0]).sum())
  if gradients:
    assert bg_grad > 0
  else:
    assert bg_grad == 0.0
  # Foreground rows never receive head gradients.
  assert float(jnp.abs(g[:, 1]).sum()) == 0.0


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
    feats = module._features(images, False)
    _, _, v_b = module.rpn(feats)
    r = cfg.mask_head.roi_size
    sem = module.mask_head(module._pool(feats, boxes, r).reshape(
        (-1, r, r, cfg.fpn_channels)))['semantic']
    mat, _ = class_matrix(module._sync_bg(v_b, 'mask'), vecs, cm)
    ws, ws_valid = class_matrix(module._sync_bg(v_b, 'mask'), seen, sm)
    if scoring == 'projected':
      sem = project_through_seen(sem, ws, ws_valid)
    logits = mask_logits_per_roi(sem, mat[jnp.clip(classes, 0, None).reshape(-1) + 1])
    return jax.nn.sigmoid(logits).reshape(classes.shape + (28, 28))

  ref = jax.jit(lambda v, im, b, c: model.apply(v, im, b, c, method=reference))(
      variables, batch['image'], out['boxes'], out['classes'])
  np.testing.assert_allclose(m[valid], np.asarray(ref)[valid], rtol=1e-4, atol=1e-5)


def test_mask_roi_buckets_leave_losses_and_gradients_unchanged(setup):
  # The mask head runs in the smallest slot bucket holding the batch's
  # positives; the loss must be that of the full cap (no positive dropped).
  cfg, _, variables, vecs = setup
  assert mask_roi_buckets(128, 4) == (16, 32, 64, 128)
  assert mask_roi_buckets(8, 1) == (8,)
  assert mask_roi_buckets(2, 4) == (1, 2)
  params = variables['params']
  rest = {k: v for k, v in variables.items() if k != 'params'}
  batch = make_batch(np.random.default_rng(5), n_real=(1, 1))
  out = {}
  # (16,) slots; (8, 16) with the gradients computed inside the taken bucket
  # (fused_backward, the default); (8, 16) with rematerialised branches.
  for name, buckets, fused in (('one', 1, True), ('fused', 2, True), ('remat', 2, False)):
    c = cfg.copy_and_resolve_references()
    c.roi_sampling.num_samples = 64
    c.mask_head.max_rois_per_image = 16
    c.mask_head.roi_buckets = buckets
    c.mask_head.fused_backward = fused
    model = ZSIModel(config=c, background_init=tuple(vecs.mean(0).tolist()))

    def loss(p):
      terms, aux = model.apply({'params': p, **rest}, batch, jnp.asarray(vecs),
                               jnp.asarray(np.arange(K_MAX) < 3), jax.random.PRNGKey(0), True,
                               method=ZSIModel.losses)
      return 3.0 * terms['total'], (terms, aux)   # a cotangent other than 1

    (_, (terms, aux)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    out[name] = terms, aux, grads
  t1, a1, g1 = out['one']
  positives = int(a1['num_mask_rois'])
  assert 0 < positives <= 8, positives           # so the bucket below the cap (16) runs
  # The mask head gets gradients (so the comparison below covers them).
  assert float(jnp.abs(g1['mask_head']['conv1']['kernel']).sum()) > 0
  for name in ('fused', 'remat'):
    t4, a4, g4 = out[name]
    assert int(a4['mask_bucket']) == 0 and int(a4['num_mask_rois']) == positives, name
    for k in t1:
      np.testing.assert_allclose(float(t4[k]), float(t1[k]), rtol=1e-5, atol=1e-6,
                                 err_msg=f'{name} {k}')
    # Summation order differs between the paths: float32 noise relative to
    # each leaf's scale.
    jax.tree_util.tree_map_with_path(
        lambda path, a, b: np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=1e-4 * float(np.max(np.abs(b))) + 1e-8,
            err_msg=f'{name} {jax.tree_util.keystr(path)}'), g4, g1)


def test_projected_scoring_keeps_seen_probabilities_in_gzsi(setup):
  # GZSI with the reference code's projected scoring: seen targets get their
  # softmax probability, unseen targets p . [v_b; W_s] . w_u (no renormalisation).
  _, model, variables, vecs = setup
  rng = np.random.default_rng(7)
  sem = jnp.asarray(rng.normal(size=(1, 5, D)), jnp.float32)
  v_b = jnp.asarray(vecs.mean(0))
  seen, seen_valid = jnp.asarray(vecs), jnp.asarray(np.arange(K_MAX) < 3)
  order = [0, 3, 1, 4, 2, 5]                    # seen and unseen targets interleaved
  targets, t_valid = jnp.asarray(vecs[order]), jnp.asarray(np.arange(K_MAX) < 5)
  scores = model.apply(variables, sem, *class_matrix(v_b, targets, t_valid), v_b, seen, seen_valid,
                       'projected', 'det', method=ZSIModel._class_scores)
  ws = np.concatenate([np.asarray(v_b)[None], vecs[:3]])
  logits = np.asarray(sem) @ ws.T
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  s = np.asarray(scores)
  for col, cls in enumerate(order[:5]):
    if cls < 3:
      np.testing.assert_allclose(s[..., col], p[..., 1 + cls], rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_allclose(s[..., col], (p @ ws) @ vecs[cls], rtol=1e-4, atol=1e-6)
  assert np.all(s[..., 5] == 0)                 # padded target slot
