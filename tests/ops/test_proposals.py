"""generate_proposals against a torchvision-ops reference pipeline."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision
from hypothesis import given, settings, strategies as st
from torchvision.models.detection._utils import BoxCoder

from zsi_jax.ops.proposals import generate_proposals


def _level(rng, n, size):
  c = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(4, size / 3, (n, 2))
  anchors = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
  obj = rng.normal(size=n).astype(np.float32)
  deltas = (0.2 * rng.normal(size=(n, 4))).astype(np.float32)
  return obj, deltas, anchors


def _reference(objs, dels, ancs, hw, pre, thr, post, min_size):
  """torchvision RPN.filter_proposals logic, with the ops of torchvision."""
  coder = BoxCoder((1., 1., 1., 1.))
  boxes, scores, levels = [], [], []
  for lvl, (o, d, a) in enumerate(zip(objs, dels, ancs)):
    o, d, a = map(torch.from_numpy, (o, d, a))
    k = min(pre, o.shape[0])
    s, i = o.topk(k)
    b = coder.decode_single(d[i], a[i])
    b = torchvision.ops.clip_boxes_to_image(b, hw)
    keep = torchvision.ops.remove_small_boxes(b, min_size) if min_size > 0 else torch.arange(k)
    b, s = b[keep], s[keep]
    keep = torchvision.ops.nms(b, s, thr)
    boxes.append(b[keep]); scores.append(s[keep]); levels.append(torch.full((len(keep),), lvl))
  b, s = torch.cat(boxes), torch.cat(scores)
  order = torch.argsort(s, descending=True, stable=True)[:post]
  return b[order].numpy(), s[order].numpy()


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.5, 0.7]), st.sampled_from([0.0, 6.0]))
def test_generate_proposals_matches_torchvision(seed, thr, min_size):
  rng = np.random.default_rng(seed)
  hw = (96, 128)
  levels = [_level(rng, n, 128) for n in (120, 60, 30)]
  objs, dels, ancs = map(list, zip(*levels))
  pre, post = 50, 80
  f = jax.jit(lambda o, d: generate_proposals(o, d, ancs, hw, pre, thr, post, min_size))
  b, s, v = map(np.asarray, f(objs, dels))
  rb, rs = _reference(objs, dels, ancs, hw, pre, thr, post, min_size)
  n = len(rs)
  assert v.sum() == n and v[:n].all()
  np.testing.assert_allclose(s[:n], rs, rtol=1e-6)
  np.testing.assert_allclose(b[:n], rb, atol=1e-3)
  assert (b[n:] == 0).all() and np.isneginf(s[n:]).all()


def test_generate_proposals_vmap_and_anchor_valid():
  rng = np.random.default_rng(3)
  objs, dels, ancs = map(list, zip(*[_level(rng, 40, 64), _level(rng, 20, 64)]))
  av = [np.arange(40) % 2 == 0, np.zeros(20, bool)]
  bo = [jnp.stack([o, o]) for o in objs]
  bd = [jnp.stack([d, d]) for d in dels]
  b, s, v = jax.vmap(lambda o, d: generate_proposals(
      o, d, ancs, (64, 64), 30, 0.7, 40, anchor_valid=av))(bo, bd)
  assert b.shape == (2, 40, 4) and v.shape == (2, 40)
  np.testing.assert_array_equal(np.asarray(b[0]), np.asarray(b[1]))
  # Only the 20 valid anchors of level 0 can produce proposals.
  assert int(v[0].sum()) <= 20
  allowed = set(np.round(objs[0][av[0]], 5).tolist())
  assert set(np.round(np.asarray(s[0])[np.asarray(v[0])], 5).tolist()) <= allowed
