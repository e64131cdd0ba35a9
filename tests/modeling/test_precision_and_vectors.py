"""bfloat16 compute, and the one-hot control at tiny scale."""
import jax
import jax.numpy as jnp
import numpy as np

from tests import tiny_config as tiny
from tests.modeling.test_zsi import make_batch
from zsi_jax.modeling.build import build_model, init_variables
from zsi_jax.modeling.zsi import ZSIModel


def test_bfloat16_compute_keeps_float32_params_and_losses():
  c = tiny.get_config().model
  c.dtype = 'bfloat16'
  vecs = np.eye(4, 16, dtype=np.float32) * 0.77
  model = build_model(c, vecs.mean(0), 4, training=True)
  v = init_variables(model, jax.random.PRNGKey(0), (64, 64))
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(v['params']))
  terms, _ = jax.jit(lambda v, b: model.apply(v, b, vecs, np.ones(4, bool), jax.random.PRNGKey(0),
                                              True, method=ZSIModel.losses))(
      v, make_batch(np.random.default_rng(0)))
  for k, t in terms.items():
    assert t.dtype == jnp.float32 and np.isfinite(float(t)), k


def test_one_hot_vectors_give_unseen_classes_no_signal():
  """With one-hot class vectors an unseen class's vector is orthogonal to every
  seen one, so before any training on it its logit is independent of the
  image's content along the seen directions: the semantic encoder cannot
  transfer. With attribute vectors, unseen vectors overlap seen ones."""
  from zsi_jax.data import shapes
  seen, unseen = shapes.class_split()
  names = seen + unseen
  sem, _ = shapes.class_vectors(names, 64, 0, 'semantic')
  onehot, _ = shapes.class_vectors(names, 64, 0, 'onehot')
  s, u = len(seen), len(unseen)
  # Largest |cosine| of each unseen vector with the seen vectors.
  cos = lambda v: np.abs(v[s:] @ v[:s].T) / (np.linalg.norm(v[s:], axis=1)[:, None] *
                                             np.linalg.norm(v[:s], axis=1)[None])
  assert cos(onehot).max() == 0.0
  assert cos(sem).max(axis=1).min() > 0.3
  # The model's unseen logits are dot products with those vectors: any feature
  # in the span of the seen vectors scores 0 for every one-hot unseen class.
  feats = np.random.default_rng(0).normal(size=(10, s)) @ onehot[:s]
  np.testing.assert_allclose(feats @ onehot[s:].T, 0.0, atol=1e-6)
