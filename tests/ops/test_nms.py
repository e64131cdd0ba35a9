"""Greedy NMS with padding against torchvision.ops.nms and a NumPy reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings, strategies as st

from zsi_jax.ops import nms
from tests.ops.helpers import random_boxes


def numpy_greedy_nms(boxes, scores, thr, valid=None):
  """Plain greedy NMS: stable descending order, suppress IoU > thr."""
  order = np.argsort(-scores, kind='stable')
  if valid is not None:
    order = [i for i in order if valid[i]]
  keep = []
  for i in order:
    ok = True
    for j in keep:
      xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
      xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
      inter = max(xx2 - xx1, 0) * max(yy2 - yy1, 0)
      ai = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
      aj = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
      union = ai + aj - inter
      if union > 0 and inter / union > thr:
        ok = False
        break
    if ok:
      keep.append(i)
  return np.array(keep, np.int64)


# Hypothesis draws many box counts and thresholds: the boxes are padded to a
# fixed size (the padding marked invalid, as in the model) and the threshold is
# traced, so each block size compiles once instead of every example running
# op by op.
_NMS_PAD = 80
_nms_jit = jax.jit(nms.nms_padded, static_argnames=('max_output', 'block_size'))
_batched_nms_jit = jax.jit(nms.batched_nms_padded, static_argnames=('max_output',))


def _padded(x, size, fill=0):
  return np.concatenate([x, np.full((size - len(x),) + x.shape[1:], fill, x.dtype)])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, _NMS_PAD), st.floats(0.01, 0.99), st.sampled_from([1, 5, 16, 256]),
       st.integers(0, 2**31 - 1))
def test_matches_torchvision_every_threshold(n, thr, block, seed):
  rng = np.random.default_rng(seed)
  # Clustered boxes so that suppression chains (A kills B, B would kill C) occur.
  b = random_boxes(rng, n, hi=40.0, max_size=30.0)
  s = rng.permutation(n).astype(np.float32) / n  # distinct scores: no tie ambiguity
  # Any block size (one box per block = the plain sequential loop).
  idx, num = _nms_jit(jnp.asarray(_padded(b, _NMS_PAD, 5.0)), jnp.asarray(_padded(s, _NMS_PAD, 2.0)),
                      np.float32(thr), max_output=_NMS_PAD,
                      valid=jnp.asarray(np.arange(_NMS_PAD) < n), block_size=block)
  ref = torchvision.ops.nms(torch.tensor(b), torch.tensor(s), thr).numpy()
  assert int(num) == len(ref)
  np.testing.assert_array_equal(np.asarray(idx)[:len(ref)], ref)
  assert np.all(np.asarray(idx)[len(ref):] == -1)


@pytest.mark.parametrize('block', [7, 256])
@pytest.mark.parametrize('thr', [0.05, 0.2, 0.35, 0.45])
def test_low_thresholds_on_dense_chains(thr, block):
  # A row of boxes overlapping their neighbours by various amounts: the case in
  # which tiled NMS variants diverge from greedy NMS below 0.5.
  x = np.cumsum(np.linspace(2, 9, 60)).astype(np.float32)
  b = np.stack([x, np.zeros_like(x), x + 10, np.full_like(x, 10)], 1)
  s = np.linspace(1, 0, 60).astype(np.float32)[np.random.default_rng(1).permutation(60)]
  idx, num = nms.nms_padded(jnp.asarray(b), jnp.asarray(s), thr, 60, block_size=block)
  ref = torchvision.ops.nms(torch.tensor(b), torch.tensor(s), thr).numpy()
  np.testing.assert_array_equal(np.asarray(idx)[:int(num)], ref)


def test_ties_duplicates_zero_area_and_padding():
  b = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11], [5, 5, 5, 5],
                [5, 5, 5, 5], [50, 50, 60, 60], [50, 50, 60, 60]], np.float32)
  s = np.array([0.9, 0.9, 0.8, 0.7, 0.7, 0.95, 0.99], np.float32)
  valid = np.array([True, True, True, True, True, True, False])
  for thr in (0.1, 0.5, 0.9):
    idx, num = nms.nms_padded(jnp.asarray(b), jnp.asarray(s), thr, 7, valid=jnp.asarray(valid))
    ref = numpy_greedy_nms(b, s, thr, valid)
    np.testing.assert_array_equal(np.asarray(idx)[:int(num)], ref)
    assert 6 not in np.asarray(idx)          # padded entry never selected
    assert 1 not in np.asarray(idx)          # exact duplicate of a tie winner suppressed
    assert 3 in np.asarray(idx) and 4 in np.asarray(idx)  # zero-area boxes: IoU 0, both kept


def test_max_output_truncates_and_nan_scores_are_invalid():
  rng = np.random.default_rng(0)
  b = random_boxes(rng, 50, hi=500.0, max_size=5.0)
  s = rng.random(50).astype(np.float32)
  s[3] = np.nan
  idx, num = nms.nms_padded(jnp.asarray(b), jnp.asarray(s), 0.5, 10, block_size=8)
  assert int(num) == 10 and 3 not in np.asarray(idx)
  full = numpy_greedy_nms(b, np.nan_to_num(s, nan=-np.inf), 0.5)
  full = full[full != 3]
  np.testing.assert_array_equal(np.asarray(idx), full[:10])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 60), st.integers(1, 5), st.floats(0.05, 0.95), st.integers(0, 2**31 - 1))
def test_batched_matches_torchvision(n, k, thr, seed):
  rng = np.random.default_rng(seed)
  b = random_boxes(rng, n, hi=40.0)
  s = rng.permutation(n).astype(np.float32) / n
  c = rng.integers(0, k, n)
  idx, num = _batched_nms_jit(jnp.asarray(_padded(b, 60, 5.0)), jnp.asarray(_padded(s, 60, 2.0)),
                              jnp.asarray(_padded(c, 60)), np.float32(thr), max_output=60,
                              valid=jnp.asarray(np.arange(60) < n))
  ref = torchvision.ops.batched_nms(torch.tensor(b), torch.tensor(s), torch.tensor(c), thr).numpy()
  np.testing.assert_array_equal(np.asarray(idx)[:int(num)], ref)
  assert int(num) == len(ref)


def test_jit_vmap():
  rng = np.random.default_rng(0)
  b = jnp.asarray(np.stack([random_boxes(rng, 30, hi=40) for _ in range(3)]))
  s = jnp.asarray(rng.random((3, 30)).astype(np.float32))
  f = jax.jit(jax.vmap(lambda bb, ss: nms.nms_padded(bb, ss, 0.4, 30)))
  idx, num = f(b, s)
  for i in range(3):
    ref = torchvision.ops.nms(torch.tensor(np.asarray(b[i])), torch.tensor(np.asarray(s[i])), 0.4)
    np.testing.assert_array_equal(np.asarray(idx[i])[:int(num[i])], ref.numpy())
