"""ResNet and FPN: shapes and strides, norms, frozen stages, FPN vs torchvision's FPN."""
from collections import OrderedDict

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from zsi_jax.modeling.fpn import FPN
from zsi_jax.modeling.resnet import FrozenBatchNorm, ResNet, trainable_mask


@pytest.mark.parametrize('depth,norm', [(18, 'group_norm'), (50, 'frozen_bn'), (34, 'batch_norm')])
def test_resnet_strides_and_channels(depth, norm):
  net = ResNet(depth=depth, width=0.125, norm=norm, frozen_stages=0)
  x = jnp.zeros((2, 72, 100, 3))  # not a multiple of 32
  v = net.init(jax.random.PRNGKey(0), x)
  outs = net.apply(v, x, train=False)
  exp = 4 if depth >= 50 else 1
  for i, o in enumerate(outs):
    s = 4 * 2 ** i
    assert o.shape == (2, -(-72 // s), -(-100 // s), 8 * 2 ** i * exp)
  if norm == 'batch_norm':
    _, upd = net.apply(v, x + 1.0, train=True, mutable=['batch_stats'])
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), v['batch_stats'],
                                     upd['batch_stats'])
    assert any(jax.tree_util.tree_leaves(changed))


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_frozen_batch_norm_equals_flax_batch_norm_in_eval_mode(dtype):
  """The folded multiply-add against nn.BatchNorm(use_running_average=True) on the
  same variables, and against the formula in NumPy: values and gradients."""
  keys = jax.random.split(jax.random.PRNGKey(3), 5)
  c = 16
  x = (3.0 * jax.random.normal(keys[0], (2, 5, 7, c)) + 1.0).astype(dtype)
  variables = {'params': {'scale': 1.0 + 0.5 * jax.random.normal(keys[1], (c,)),
                          'bias': jax.random.normal(keys[2], (c,))},
               'batch_stats': {'mean': jax.random.normal(keys[3], (c,)),
                               'var': jax.random.uniform(keys[4], (c,), minval=0.1, maxval=4.0)}}
  ours = FrozenBatchNorm(dtype=dtype)
  flax_bn = nn.BatchNorm(use_running_average=True, epsilon=1e-5, dtype=dtype)
  assert jax.tree_util.tree_structure(ours.init(keys[0], x)) == \
      jax.tree_util.tree_structure(flax_bn.init(keys[0], x))
  y = ours.apply(variables, x)
  assert y.dtype == dtype
  p, s = variables['params'], variables['batch_stats']
  want = ((np.asarray(x, np.float64) - np.asarray(s['mean'], np.float64))
          / np.sqrt(np.asarray(s['var'], np.float64) + 1e-5) * np.asarray(p['scale'], np.float64)
          + np.asarray(p['bias'], np.float64))
  tol = 1e-5 if dtype == jnp.float32 else 1e-2
  np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=tol, atol=tol)

  g = jax.random.normal(keys[1], x.shape)
  def loss(module, params, x):
    out = module.apply({'params': params, 'batch_stats': s}, x)
    return jnp.sum(out.astype(jnp.float32) * g)
  got = jax.grad(lambda prm, x: loss(ours, prm, x), argnums=(0, 1))(p, x)
  ref = jax.grad(lambda prm, x: loss(flax_bn, prm, x), argnums=(0, 1))(p, x)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                               rtol=tol, atol=tol * float(jnp.max(jnp.abs(b.astype(jnp.float32)))))


def test_frozen_bn_statistics_never_change():
  net = ResNet(depth=18, width=0.125, norm='frozen_bn', frozen_stages=0)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
  v = net.init(jax.random.PRNGKey(0), x)
  a = net.apply(v, x, train=True)
  b = net.apply(v, x, train=False)
  for p, q in zip(a, b):  # eval-mode statistics in training too
    np.testing.assert_array_equal(np.asarray(p), np.asarray(q))


def test_frozen_stages_get_no_gradient_and_are_masked():
  net = ResNet(depth=18, width=0.125, norm='group_norm', frozen_stages=1)
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 32, 32, 3))
  v = net.init(jax.random.PRNGKey(0), x)
  g = jax.grad(lambda p: sum(jnp.sum(o ** 2) for o in net.apply({'params': p}, x)))(v['params'])
  for name, sub in g.items():
    total = sum(float(jnp.abs(l).sum()) for l in jax.tree_util.tree_leaves(sub))
    frozen = name.startswith('stem') or name.startswith('layer1_')
    assert (total == 0) == frozen, name
  mask = trainable_mask(v['params'], 1)
  assert not any(jax.tree_util.tree_leaves(mask['stem_conv']))
  assert not any(jax.tree_util.tree_leaves(mask['layer1_0']))
  assert all(jax.tree_util.tree_leaves(mask['layer2_0']))


def test_fpn_matches_torchvision():
  rng = np.random.default_rng(0)
  chans = [8, 16, 32, 64]
  shapes = [(20, 26), (10, 13), (5, 7), (3, 4)]  # odd sizes, as from a 80x104 image
  cs = [rng.normal(size=(1, h, w, c)).astype(np.float32) for (h, w), c in zip(shapes, chans)]
  fpn = FPN(channels=12)
  v = fpn.init(jax.random.PRNGKey(0), [jnp.asarray(c) for c in cs])
  ours = fpn.apply(v, [jnp.asarray(c) for c in cs])
  tv = FeaturePyramidNetwork(chans, 12, extra_blocks=LastLevelMaxPool()).eval()
  p = v['params']
  with torch.no_grad():
    for i in range(4):
      lat, out = tv.inner_blocks[i][0], tv.layer_blocks[i][0]
      lat.weight.copy_(torch.tensor(np.asarray(p[f'lateral{i + 2}']['kernel']).transpose(3, 2, 0, 1)))
      lat.bias.copy_(torch.tensor(np.asarray(p[f'lateral{i + 2}']['bias'])))
      out.weight.copy_(torch.tensor(np.asarray(p[f'output{i + 2}']['kernel']).transpose(3, 2, 0, 1)))
      out.bias.copy_(torch.tensor(np.asarray(p[f'output{i + 2}']['bias'])))
    ref = tv(OrderedDict((str(i), torch.tensor(c).permute(0, 3, 1, 2)) for i, c in enumerate(cs)))
  ref = [r.permute(0, 2, 3, 1).numpy() for r in ref.values()]
  assert len(ours) == len(ref) == 5
  for o, r in zip(ours, ref):
    assert o.shape == r.shape
    np.testing.assert_allclose(np.asarray(o), r, atol=1e-4, rtol=1e-4)
