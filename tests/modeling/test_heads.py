"""BA-RPN, semantic box head and semantic mask head: shapes, initial v_b, all convs used."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zsi_jax.modeling import losses
from zsi_jax.modeling.ba_rpn import BackgroundAwareRPN
from zsi_jax.modeling.box_head import SemanticBoxHead
from zsi_jax.modeling.layers import (WINOGRAD_MIN_MACS, Conv1x1, Conv3x3, Linear,
                                     conv3x3_winograd, resolve_conv_impl)
from zsi_jax.modeling.mask_head import (Deconv2x, SemanticMaskHead, mask_logits,
                                        mask_logits_per_roi)

D = 12
BG = tuple(np.linspace(-0.1, 0.1, D).tolist())


def _levels(b=2, c=8):
  return [jnp.ones((b, s, s, c)) * 0.1 for s in (16, 8, 4)]


@pytest.mark.parametrize('semantic', [True, False])
def test_rpn_shapes_and_initial_background(semantic):
  rpn = BackgroundAwareRPN(background_init=BG, num_anchors=3, channels=8, semantic=semantic)
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
  rpn = BackgroundAwareRPN(background_init=BG, num_anchors=3, channels=8)
  feats = [jax.random.normal(jax.random.PRNGKey(1), (1, 4, 4, 8))]
  params = rpn.init(jax.random.PRNGKey(0), feats)
  logits, _, _ = rpn.apply(params, feats)
  h = rpn.apply(params, feats[0], method=lambda m, x: m.semantic_projection(nn_relu(m.conv(x))))
  ref = np.einsum('bhwd,akd->bhwak', np.asarray(h), np.asarray(params['params']['W_bf']))
  np.testing.assert_allclose(np.asarray(logits[0]), ref.reshape(1, -1, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('impl', ['gemm', 'conv'])
def test_conv1x1_then_folds_a_linear_map(impl):
  # BA-RPN folds T and W_bf into one matrix: conv(x) @ then, same values and
  # gradients for the kernel, the bias and ``then`` itself.
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(2, 5, 3, 6)), jnp.float32)
  then = jnp.asarray(rng.normal(size=(9, 4)), jnp.float32)
  conv = Conv1x1(9, impl=impl)
  v = conv.init(jax.random.PRNGKey(0), x)
  v = jax.tree_util.tree_map(lambda a: a + 0.3, v)      # a non-zero bias
  w = jnp.asarray(rng.normal(size=(2, 5, 3, 4)), jnp.float32)
  loss = lambda fn: lambda v, t: jnp.sum(fn(v, t) * w)
  folded = lambda v, t: conv.apply(v, x, then=t)
  plain = lambda v, t: conv.apply(v, x) @ t
  np.testing.assert_allclose(folded(v, then), plain(v, then), rtol=1e-5, atol=1e-5)
  g_f = jax.grad(loss(folded), argnums=(0, 1))(v, then)
  g_p = jax.grad(loss(plain), argnums=(0, 1))(v, then)
  for a, b in zip(jax.tree_util.tree_leaves(g_f), jax.tree_util.tree_leaves(g_p)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


def _small_mask_head(encoder, seed):
  """A one-conv mask head on 3 RoIs of 8 channels, with non-zero biases: (head, rng, x, variables)."""
  head = SemanticMaskHead(semantic_dim=D, channels=8, num_convs=1, encoder=encoder)
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
    return (losses.sigmoid_binary_cross_entropy(mask_logits_per_roi(out['semantic'], vecs),
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
  no_dec = SemanticMaskHead(semantic_dim=D, channels=8, num_convs=1, encoder=encoder,
                            use_decoder=False)
  out = no_dec.apply(no_dec.init(jax.random.PRNGKey(0), x), x, vecs[:, None], residual=True)
  assert out['residual'] is None and out['logits'].shape == (3, 28, 28, 1)


def test_linear_is_nn_dense_and_folds_then():
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.normal(size=(3, 4, 5, 6)), jnp.float32)
  dense = nn.Dense(7)
  v = dense.init(jax.random.PRNGKey(0), x)
  v = jax.tree_util.tree_map(lambda a: a + 0.1, v)
  lin = Linear(7, 6)
  assert jax.tree_util.tree_map(jnp.shape, lin.init(jax.random.PRNGKey(0), x)) == \
      jax.tree_util.tree_map(jnp.shape, v)
  y = dense.apply(v, x)
  np.testing.assert_allclose(lin.apply(v, x), y, rtol=1e-5, atol=1e-5)
  shared = jnp.asarray(rng.normal(size=(7, 2)), jnp.float32)
  per_row = jnp.asarray(rng.normal(size=(3, 7, 2)), jnp.float32)
  np.testing.assert_allclose(lin.apply(v, x, shared), y @ shared, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(lin.apply(v, x, per_row),
                             jnp.einsum('nhwd,ndk->nhwk', y, per_row), rtol=1e-4, atol=1e-5)


def nn_relu(x):
  return jax.nn.relu(x)


def test_v_b_gradient_comes_from_w_bf():
  rpn = BackgroundAwareRPN(background_init=BG, num_anchors=3, channels=8)
  feats = _levels(1)
  params = rpn.init(jax.random.PRNGKey(0), feats)
  g = jax.grad(lambda p: jnp.sum(rpn.apply(p, feats)[2]))(params)['params']['W_bf']
  np.testing.assert_allclose(np.asarray(g[:, 0]), 1.0 / 3)
  np.testing.assert_array_equal(np.asarray(g[:, 1]), 0.0)


@pytest.mark.parametrize('decoder,reg,vocab', [(True, 0, 0), (False, 5, 0), (True, 5, 7)])
def test_box_head_outputs(decoder, reg, vocab):
  head = SemanticBoxHead(semantic_dim=D, fc_dim=32, use_decoder=decoder, num_reg_classes=reg,
                         vocabulary_size=vocab)
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
  head = SemanticMaskHead(semantic_dim=D, channels=8, num_convs=4)
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
  head = SemanticMaskHead(semantic_dim=D, channels=8, encoder='conv3x3', use_decoder=False)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 14, 14, 8))
  params = head.init(jax.random.PRNGKey(0), x)
  out = head.apply(params, x)
  assert out['reconstruction'] is None and 'E_1' in params['params']
  w = jax.random.normal(jax.random.PRNGKey(2), (5, D))
  full = mask_logits(out['semantic'], w)
  assert full.shape == (2, 28, 28, 5)
  per = mask_logits_per_roi(out['semantic'], w[jnp.array([3, 1])])
  np.testing.assert_allclose(np.asarray(per), np.asarray(full[jnp.arange(2), ..., jnp.array([3, 1])]),
                             rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='encoder'):
    SemanticMaskHead(semantic_dim=D, encoder='bogus').init(jax.random.PRNGKey(0), x)


def test_deconv2x_is_the_stride2_transposed_convolution():
  # Same parameters, values and gradients as nn.ConvTranspose(2x2, stride 2),
  # which it replaces for speed (its kernel gradient is slow on XLA:CPU).
  x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 5, 6, 7)), jnp.float32)
  ref = nn.ConvTranspose(4, (2, 2), strides=(2, 2))
  v = ref.init(jax.random.PRNGKey(0), x)
  v = jax.tree_util.tree_map(lambda a: a + jax.random.normal(jax.random.PRNGKey(1), a.shape), v)
  ours = Deconv2x(4)
  assert jax.tree_util.tree_map(jnp.shape, ours.init(jax.random.PRNGKey(0), x)) == \
      jax.tree_util.tree_map(jnp.shape, v)
  np.testing.assert_allclose(ours.apply(v, x), ref.apply(v, x), atol=1e-5)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 10, 12, 4)), jnp.float32)
  g_ours = jax.grad(lambda v, x: jnp.sum(ours.apply(v, x) * w), argnums=(0, 1))(v, x)
  g_ref = jax.grad(lambda v, x: jnp.sum(ref.apply(v, x) * w), argnums=(0, 1))(v, x)
  for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('impl', ['gemm', 'conv', 'mixed', 'winograd'])
def test_conv3x3_matches_nn_conv(impl):
  # Every implementation: nn.Conv's parameters, values and gradients (the
  # Winograd form rounds differently, by about 1e-5 of the output's scale).
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 5, 7)), jnp.float32)
  ref = nn.Conv(4, (3, 3), padding=1)
  v = ref.init(jax.random.PRNGKey(0), x)
  v = jax.tree_util.tree_map(lambda a: a + jax.random.normal(jax.random.PRNGKey(1), a.shape), v)
  ours = Conv3x3(4, impl)
  assert jax.tree_util.tree_map(jnp.shape, ours.init(jax.random.PRNGKey(0), x)) == \
      jax.tree_util.tree_map(jnp.shape, v)
  scale = 10.0 if impl == 'winograd' else 1.0
  np.testing.assert_allclose(ours.apply(v, x), ref.apply(v, x), rtol=1e-5, atol=1e-4 * scale)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 5, 4)), jnp.float32)
  g_ours = jax.grad(lambda v, x: jnp.sum(ours.apply(v, x) * w), argnums=(0, 1))(v, x)
  g_ref = jax.grad(lambda v, x: jnp.sum(ref.apply(v, x) * w), argnums=(0, 1))(v, x)
  for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3 * scale)


@pytest.mark.parametrize('shape', [(2, 13, 21, 8), (3, 4, 8, 5), (1, 1, 1, 3), (2, 14, 14, 64)])
def test_conv3x3_winograd_matches_float64_taps(shape):
  """F(4x4, 3x3) against the convolution summed tap by tap in float64: whole,
  partial and single tiles (sizes not multiples of 4 are padded and cropped),
  error within 3e-5 of the output's scale, and a bf16 input gives a bf16
  output computed in float32."""
  rng = np.random.default_rng(0)
  n, h, w, c = shape
  x = rng.normal(size=shape)
  k = rng.normal(size=(3, 3, c, 6))
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  ref = sum(p[:, i:i + h, j:j + w] @ k[i, j] for i in range(3) for j in range(3))
  got = np.asarray(jax.jit(conv3x3_winograd)(jnp.asarray(x, jnp.float32),
                                             jnp.asarray(k, jnp.float32)))
  assert got.shape == (n, h, w, 6)
  assert np.abs(got - ref).max() <= 3e-5 * np.abs(ref).max()
  got16 = conv3x3_winograd(jnp.asarray(x, jnp.bfloat16), jnp.asarray(k, jnp.float32))
  assert got16.dtype == jnp.bfloat16
  assert np.abs(np.asarray(got16, np.float32) - ref).max() <= 2e-2 * np.abs(ref).max()


def test_auto_conv_impl_picks_winograd_for_large_convolutions_on_the_cpu():
  # The suite runs on the CPU (JAX_PLATFORMS=cpu): 'auto' is Winograd from
  # WINOGRAD_MIN_MACS multiply-adds up (or when the size is not given) and
  # 'mixed' below; explicit settings pass through; a typo is an error.
  assert jax.default_backend() == 'cpu'
  mask_head = 9 * 200 * 14 * 14 * 256 * 256
  assert mask_head >= WINOGRAD_MIN_MACS
  assert resolve_conv_impl('auto', mask_head) == 'winograd'
  assert resolve_conv_impl('auto', 9 * 2 * 16 * 16 * 32 * 32) == 'mixed'
  assert resolve_conv_impl('auto') == 'winograd'
  assert resolve_conv_impl('conv', mask_head) == 'conv'
  assert resolve_conv_impl('mixed') == 'mixed'
  with pytest.raises(ValueError, match='winogard'):
    resolve_conv_impl('winogard')


@pytest.mark.parametrize('impl', ['gemm', 'conv'])
@pytest.mark.parametrize('stride,use_bias', [(1, True), (2, False)])
def test_conv1x1_matches_nn_conv(impl, stride, use_bias):
  # The backbone's 1x1 (and strided downsample) convolutions, the FPN laterals
  # and the RPN projections: nn.Conv's parameters, values and gradients, odd
  # sizes included (output ceil(H / stride), as torchvision's padding 0).
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 7, 6, 5)), jnp.float32)
  ref = nn.Conv(4, (1, 1), strides=(stride, stride), padding=[(0, 0), (0, 0)], use_bias=use_bias)
  v = ref.init(jax.random.PRNGKey(0), x)
  v = jax.tree_util.tree_map(lambda a: a + jax.random.normal(jax.random.PRNGKey(1), a.shape), v)
  ours = Conv1x1(4, impl=impl, stride=stride, use_bias=use_bias)
  assert jax.tree_util.tree_map(jnp.shape, ours.init(jax.random.PRNGKey(0), x)) == \
      jax.tree_util.tree_map(jnp.shape, v)
  y = ref.apply(v, x)
  assert y.shape == (2, -(-7 // stride), -(-6 // stride), 4)
  np.testing.assert_allclose(ours.apply(v, x), y, rtol=1e-5, atol=1e-5)
  w = jnp.asarray(np.random.default_rng(1).normal(size=y.shape), jnp.float32)
  g_ours = jax.grad(lambda v, x: jnp.sum(ours.apply(v, x) * w), argnums=(0, 1))(v, x)
  g_ref = jax.grad(lambda v, x: jnp.sum(ref.apply(v, x) * w), argnums=(0, 1))(v, x)
  for a, b in zip(jax.tree_util.tree_leaves(g_ours), jax.tree_util.tree_leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
