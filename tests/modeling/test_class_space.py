"""The class space [v_b; W]: padding, masked logits, direct and projected scoring,
against NumPy."""
import jax.numpy as jnp
import numpy as np
import pytest

from zsi_jax.data.datasets import pad_class_vectors
from zsi_jax.modeling.class_space import INVALID_LOGIT, ClassSpace

D, K_MAX = 16, 6


def _vectors(seed=0):
  rng = np.random.default_rng(seed)
  vecs = rng.normal(size=(K_MAX, D)).astype(np.float32)
  return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_pad_class_vectors():
  vecs = _vectors()[:4]
  padded, valid = pad_class_vectors(vecs, 6)
  assert padded.shape == (6, D) and padded.dtype == np.float32
  np.testing.assert_array_equal(padded[:4], vecs)
  assert np.all(padded[4:] == 0) and valid.tolist() == [True] * 4 + [False] * 2
  with pytest.raises(ValueError, match='raise max_classes'):
    pad_class_vectors(vecs, 3)


def test_direct_scores_are_softmax_over_valid_classes():
  vecs = _vectors(1)
  sem = np.random.default_rng(2).normal(size=(3, D)).astype(np.float32)
  v_b = vecs.mean(0)
  valid = np.arange(K_MAX) < 4
  space = ClassSpace.build(jnp.asarray(v_b), jnp.asarray(vecs), jnp.asarray(valid))
  logits = np.asarray(space.logits(jnp.asarray(sem)))
  assert np.all(logits[:, 5:] == INVALID_LOGIT)
  ref = _softmax(sem @ np.concatenate([v_b[None], vecs[:4]]).T)
  scores = np.asarray(space.scores(jnp.asarray(sem), 'direct'))
  np.testing.assert_allclose(scores[:, :4], ref[:, 1:], rtol=1e-5, atol=1e-7)
  assert np.all(scores[:, 4:] < 1e-30)
  with pytest.raises(ValueError, match='scoring'):
    space.scores(jnp.asarray(sem), 'bogus')
  with pytest.raises(ValueError, match='seen'):
    space.scores(jnp.asarray(sem), 'projected')


def test_projected_scoring_keeps_seen_probabilities_in_gzsi():
  # GZSI with the authors' projected scoring: seen targets get their softmax
  # probability, unseen targets p . [v_b; W_s] . w_u (no renormalisation).
  vecs = _vectors()
  sem = np.random.default_rng(7).normal(size=(1, 5, D)).astype(np.float32)
  v_b = vecs.mean(0)
  order = [0, 3, 1, 4, 2, 5]                    # seen and unseen targets interleaved
  space = ClassSpace.build(jnp.asarray(v_b), jnp.asarray(vecs[order]),
                           jnp.asarray(np.arange(K_MAX) < 5), jnp.asarray(vecs),
                           jnp.asarray(np.arange(K_MAX) < 3))
  s = np.asarray(space.scores(jnp.asarray(sem), 'projected'))
  ws = np.concatenate([v_b[None], vecs[:3]])
  p = _softmax(sem @ ws.T)
  for col, cls in enumerate(order[:5]):
    if cls < 3:
      np.testing.assert_allclose(s[..., col], p[..., 1 + cls], rtol=1e-5, atol=1e-6)
    else:
      np.testing.assert_allclose(s[..., col], (p @ ws) @ vecs[cls], rtol=1e-4, atol=1e-6)
  assert np.all(s[..., 5] == 0)                 # padded target slot


@pytest.mark.parametrize('scoring', ['direct', 'projected'])
def test_mask_vectors(scoring):
  # Direct: the detected class's own vector. Projected: unseen classes through
  # the seen vectors, (v W_s^T) W_s, seen classes unchanged.
  vecs = _vectors(3)
  v_b = vecs.mean(0)
  order = [4, 0, 5, 2]                          # unseen, seen, unseen, seen
  space = ClassSpace.build(jnp.asarray(v_b), jnp.asarray(vecs[order + [1, 3]]),
                           jnp.asarray(np.arange(K_MAX) < 4), jnp.asarray(vecs),
                           jnp.asarray(np.arange(K_MAX) < 4))
  classes = np.array([0, 1, 2, 3, -1])
  got = np.asarray(space.mask_vectors(jnp.asarray(classes), scoring))
  ws = np.concatenate([v_b[None], vecs[:4]])
  for i, c in enumerate(classes):
    v = vecs[order[max(c, 0)]]
    if scoring == 'projected' and order[max(c, 0)] >= 4:
      v = (v @ ws.T) @ ws
    np.testing.assert_allclose(got[i], v, rtol=1e-5, atol=1e-6)
