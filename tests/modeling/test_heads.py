"""BA-RPN, semantic box head and semantic mask head as modules: shapes, initial v_b,
all convs used, the folded forms equal to the plain ones."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import tiny_config as tiny
from zsi_jax.modeling import losses
from zsi_jax.modeling.build import build_model

D = 12
BG = tuple(np.linspace(-0.1, 0.1, D).tolist())
_STAGES = build_model(tiny.get_config().model, BG, 0, training=True)


def make_rpn(**fields):
  """The tiny config's BA-RPN (8 channels, 3 anchors per location) with ``fields`` changed."""
  return _STAGES.rpn.clone(**{'channels': 8, **fields})


def make_box_head(**fields):
  return _STAGES.box_head.clone(**{'semantic_dim': D, 'fc_dim': 32, **fields})


def make_mask_head(**fields):
  return _STAGES.mask_head.clone(**{'semantic_dim': D, 'channels': 8, 'num_convs': 4, **fields})


def per_roi_logits(semantic, vectors):
  """Per-pixel dot products with one vector per RoI: [N, m, m, D] x [N, D] -> [N, m, m]."""
  return jnp.einsum('nhwd,nd->nhw', semantic, vectors)


def _levels(b=2, c=8):
  return [jnp.ones((b, s, s, c)) * 0.1 for s in (16, 8, 4)]


@pytest.mark.parametrize('semantic', [True, False])
def test_rpn_shapes_and_initial_background(semantic):
  rpn = make_rpn(semantic=semantic)
  feats = _levels()
  params = rpn.init(jax.random.PRNGKey(0), feats)
  logits, deltas, v_b = rpn.apply(params, feats)
  for lg, dl, f in zip(logits, deltas, feats):
    n = f.shape[1] * f.shape[2] * 3
    assert lg.shape == (2, n, 2) and dl.shape == (2, n, 4)
  # Background rows start as the text background vector, so v_b does too.
  np.testing.assert_allclose(np.asarray(v_b), np.asarray(BG), rtol=1e-6, atol=1e-7)
  if semantic:
    w_bf = params['params']['W_bf']
    assert w_bf.shape == (3, 2, D)
    # W_bf is a bare [A, 2, D] matrix of word vectors: scores have no bias term.
    assert set(params['params']) == {'conv', 'box_deltas', 'T', 'W_bf'}


def test_rpn_scores_are_dot_products_with_w_bf():
  rpn = make_rpn()
  feats = [jax.random.normal(jax.random.PRNGKey(1), (1, 4, 4, 8))]
  params = rpn.init(jax.random.PRNGKey(0), feats)
  logits, _, _ = rpn.apply(params, feats)
  h = rpn.apply(params, feats[0], method=lambda m, x: m.semantic_projection(nn_relu(m.conv(x))))
  ref = np.einsum('bhwd,akd->bhwak', np.asarray(h), np.asarray(params['params']['W_bf']))
  np.testing.assert_allclose(np.asarray(logits[0]), ref.reshape(1, -1, 2), rtol=1e-5, atol=1e-6)


def _small_mask_head(encoder, seed):
  """A one-conv mask head on 3 RoIs of 8 channels, with non-zero biases: (head, rng, x, variables)."""
  head = make_mask_head(num_convs=1, encoder=encoder)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(3, 14, 14, 8)), jnp.float32)
  v = head.init(jax.random.PRNGKey(0), x)
  return head, rng, x, jax.tree_util.tree_map(lambda a: a + 0.05, v)


@pytest.mark.parametrize('encoder', ['1x1', 'conv3x3'])
def test_mask_head_logits_for_roi_vectors(encoder):
  # Inference asks the head for semantic . v per RoI (K vectors each); the
  # 1x1 encoder folds v into its kernel. Same values as the D-channel map.
  head, rng, x, v = _small_mask_head(encoder, seed=3)
  roi_vectors = jnp.asarray(rng.normal(size=(3, 2, D)), jnp.float32)
  got = jax.jit(head.apply)(v, x, roi_vectors)['logits']
  ref = jnp.einsum('nhwd,nkd->nhwk', jax.jit(head.apply)(v, x)['semantic'], roi_vectors)
  assert got.shape == (3, 28, 28, 2)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('encoder', ['1x1', 'conv3x3'])
def test_mask_head_training_fold_matches_the_semantic_map(encoder):
  # Training asks for each RoI's target-class logits and the reconstruction
  # error; the 1x1 coders fold both (O (K_E K_D - I) + b, no D-channel map).
  # The mask losses and their gradients (parameters and RoI features) must
  # equal those computed from the semantic map and the decoder output.
  head, rng, x, v = _small_mask_head(encoder, seed=5)
  vecs = jnp.asarray(rng.normal(size=(3, D)), jnp.float32)
  target = jnp.asarray(rng.random(size=(3, 28, 28)) > 0.5, jnp.float32)
  valid = jnp.array([1.0, 1.0, 0.0])

  def folded(v, x):
    out = head.apply(v, x, vecs[:, None], residual=True)
    return (losses.sigmoid_binary_cross_entropy(out['logits'][..., 0], target,
                                                valid[:, None, None]),
            losses.residual_mse(out['residual'], valid))

  def plain(v, x):
    out = head.apply(v, x)
    return (losses.sigmoid_binary_cross_entropy(per_roi_logits(out['semantic'], vecs),
                                                target, valid[:, None, None]),
            losses.reconstruction_mse(out['features'], out['reconstruction'], valid))

  got, ref = jax.jit(folded)(v, x), jax.jit(plain)(v, x)
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  assert float(ref[1]) > 0
  for term in range(2):
    g_f = jax.jit(jax.grad(lambda v, x: folded(v, x)[term], argnums=(0, 1)))(v, x)
    g_p = jax.jit(jax.grad(lambda v, x: plain(v, x)[term], argnums=(0, 1)))(v, x)
    for a, b in zip(jax.tree_util.tree_leaves(g_f), jax.tree_util.tree_leaves(g_p)):
      np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))
  # Without the decoder there is no reconstruction error to return.
  no_dec = make_mask_head(num_convs=1, encoder=encoder, use_decoder=False)
  out = no_dec.apply(no_dec.init(jax.random.PRNGKey(0), x), x, vecs[:, None], residual=True)
  assert out['residual'] is None and out['logits'].shape == (3, 28, 28, 1)


def nn_relu(x):
  return jax.nn.relu(x)


def test_v_b_gradient_comes_from_w_bf():
  rpn = make_rpn()
  feats = _levels(1)
  params = rpn.init(jax.random.PRNGKey(0), feats)
  g = jax.grad(lambda p: jnp.sum(rpn.apply(p, feats)[2]))(params)['params']['W_bf']
  np.testing.assert_allclose(np.asarray(g[:, 0]), 1.0 / 3)
  np.testing.assert_array_equal(np.asarray(g[:, 1]), 0.0)


@pytest.mark.parametrize('decoder,reg,vocab', [(True, 0, 0), (False, 5, 0), (True, 5, 7)])
def test_box_head_outputs(decoder, reg, vocab):
  head = make_box_head(use_decoder=decoder, num_reg_classes=reg, vocabulary_size=vocab)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 7, 7, 8))
  voc = jax.random.normal(jax.random.PRNGKey(1), (vocab, D)) if vocab else None
  params = head.init(jax.random.PRNGKey(0), x, voc)
  out = head.apply(params, x, voc)
  assert out['semantic'].shape == (2, 6, D)
  assert out['features'].shape == (2, 6, 32)
  assert out['deltas_agnostic'].shape == (2, 6, 4)
  assert (out['reconstruction'] is None) == (not decoder)
  if decoder:
    assert out['reconstruction'].shape == (2, 6, 32)
  assert (out['deltas_specific'] is None) == (reg == 0)
  if reg:
    assert out['deltas_specific'].shape == (2, 6, reg, 4)
  if vocab:
    with pytest.raises(ValueError, match='vocabulary'):
      head.apply(params, x, None)


def test_mask_head_uses_all_four_convs():
  head = make_mask_head()
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 14, 14, 8))
  params = head.init(jax.random.PRNGKey(0), x)
  out = head.apply(params, x)
  assert out['semantic'].shape == (3, 28, 28, D)
  assert out['features'].shape == (3, 28, 28, 8)
  assert out['reconstruction'].shape == (3, 28, 28, 8)
  grads = jax.grad(lambda p: jnp.sum(head.apply(p, x)['semantic'] ** 2))(params)['params']
  for i in range(1, 5):
    assert float(jnp.abs(grads[f'conv{i}']['kernel']).sum()) > 0, f'conv{i} unused'


def test_mask_head_reference_encoder_and_logits():
  head = make_mask_head(encoder='conv3x3', use_decoder=False)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 14, 14, 8))
  params = head.init(jax.random.PRNGKey(0), x)
  out = head.apply(params, x)
  assert out['reconstruction'] is None and 'E_1' in params['params']
  w = jax.random.normal(jax.random.PRNGKey(2), (2, 1, D))
  got = head.apply(params, x, w)['logits'][..., 0]
  np.testing.assert_allclose(np.asarray(got), np.asarray(per_roi_logits(out['semantic'], w[:, 0])),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='encoder'):
    make_mask_head(encoder='bogus').init(jax.random.PRNGKey(0), x)
