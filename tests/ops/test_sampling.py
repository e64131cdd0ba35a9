"""match_boxes and sample_balanced against NumPy loops and torchvision's Matcher."""
import jax
import jax.numpy as jnp
import numpy as np
import torch
from hypothesis import given, settings, strategies as st
from torchvision.models.detection import _utils as det_utils

from zsi_jax.ops.sampling import match_boxes, sample_balanced


def _match_loop(iou, gt_valid, pos, neg, low_quality, low_min):
  n, g = iou.shape
  matched = np.zeros(n, np.int64)
  labels = np.zeros(n, np.int64)
  for i in range(n):
    best, arg = -1.0, 0
    for j in range(g):
      if gt_valid[j] and iou[i, j] > best:
        best, arg = iou[i, j], j
    matched[i] = arg
    labels[i] = 1 if best >= pos else (0 if best < neg else -1)
  if low_quality:
    for j in range(g):
      if not gt_valid[j]:
        continue
      gbest = max(iou[i, j] for i in range(n))
      if gbest <= 0 or gbest < low_min:
        continue
      for i in range(n):
        if iou[i, j] == gbest:
          labels[i] = 1
  return matched, labels


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.integers(1, 5), st.booleans())
def test_match_boxes_equals_loop(seed, n, g, low_quality):
  rng = np.random.default_rng(seed)
  iou = np.round(rng.uniform(0, 1, (n, g)), 2).astype(np.float32)   # rounding makes ties
  gt_valid = rng.uniform(size=g) < 0.7
  m, l = match_boxes(jnp.asarray(iou), jnp.asarray(gt_valid), 0.7, 0.3, low_quality, 0.3)
  rm, rl = _match_loop(iou, gt_valid, 0.7, 0.3, low_quality, 0.3)
  np.testing.assert_array_equal(np.asarray(l), rl)
  pos = rl == 1
  if gt_valid.any():
    # Ties in IoU may pick different gts; the matched IoU must be the best.
    np.testing.assert_allclose(iou[np.arange(n), np.asarray(m)][pos], iou[np.arange(n), rm][pos])


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000))
def test_match_boxes_equals_torchvision_matcher(seed):
  rng = np.random.default_rng(seed)
  iou = rng.uniform(0, 1, (4, 30)).astype(np.float32)   # torchvision: [G, N]
  matcher = det_utils.Matcher(0.7, 0.3, allow_low_quality_matches=True)
  ref = matcher(torch.from_numpy(iou)).numpy()
  # low_quality_min = 0 is torchvision's rule (no minimum).
  m, l = match_boxes(jnp.asarray(iou.T), jnp.ones(4, bool), 0.7, 0.3, True, 0.0)
  m, l = np.asarray(m), np.asarray(l)
  # torchvision: >= 0 matched, -1 below the low threshold, -2 between.
  np.testing.assert_array_equal(l, np.where(ref >= 0, 1, np.where(ref == -1, 0, -1)))
  np.testing.assert_array_equal(m[ref >= 0], ref[ref >= 0])


def test_padded_gt_never_matched():
  iou = jnp.array([[0.9, 0.95], [0.1, 0.8]])
  m, l = match_boxes(iou, jnp.array([True, False]), 0.7, 0.3, True, 0.3)
  np.testing.assert_array_equal(np.asarray(m), [0, 0])
  np.testing.assert_array_equal(np.asarray(l), [1, 0])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 60), st.integers(1, 40),
       st.sampled_from([0.25, 0.5]))
def test_sample_balanced_properties(seed, n, num, frac):
  rng = np.random.default_rng(seed)
  labels = rng.integers(-1, 2, n).astype(np.int32)
  cvalid = rng.uniform(size=n) < 0.8
  key = jax.random.PRNGKey(seed)
  f = jax.jit(sample_balanced, static_argnums=(2, 3))
  idx, lab = f(key, jnp.asarray(labels), num, frac, jnp.asarray(cvalid))
  idx, lab = np.asarray(idx), np.asarray(lab)
  assert idx.shape == (num,) and lab.shape == (num,)
  npos = int(((labels == 1) & cvalid).sum())
  nneg = int(((labels == 0) & cvalid).sum())
  exp_pos = min(npos, int(num * frac))
  exp_neg = min(nneg, num - exp_pos)
  assert (lab == 1).sum() == exp_pos
  assert (lab == 0).sum() == exp_neg
  used = idx[lab >= 0]
  assert len(set(used.tolist())) == len(used)
  assert cvalid[used].all()
  np.testing.assert_array_equal(labels[used], lab[lab >= 0])
  idx2, lab2 = f(key, jnp.asarray(labels), num, frac, jnp.asarray(cvalid))
  np.testing.assert_array_equal(idx, np.asarray(idx2))


def test_sample_balanced_vmap_and_uniform():
  labels = jnp.zeros((2, 10), jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  idx, lab = jax.vmap(lambda k, l: sample_balanced(k, l, 4, 0.5))(keys, labels)
  assert idx.shape == (2, 4) and (np.asarray(lab) == 0).all()
  # Every negative is picked sometimes (uniform over candidates).
  counts = np.zeros(10)
  for i in range(60):
    ix, _ = sample_balanced(jax.random.PRNGKey(i), labels[0], 4, 0.5)
    counts[np.asarray(ix)] += 1
  assert (counts > 0).all()
