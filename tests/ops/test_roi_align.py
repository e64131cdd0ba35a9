"""RoIAlign against torchvision.ops.roi_align(aligned=True), single and multi-level."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings, strategies as st

from zsi_jax.ops import roi_align as ra
from tests.ops.helpers import random_boxes


def torch_roi_align(feat_hwc, rois, out, scale, ratio):
  f = torch.tensor(feat_hwc).permute(2, 0, 1)[None]
  r = torchvision.ops.roi_align(f, [torch.tensor(rois)], out, scale, ratio, aligned=True)
  return r.permute(0, 2, 3, 1).numpy()


# Fixed shapes across examples so hypothesis does not recompile every time.
@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([1, 2]), st.sampled_from([0.25, 0.125, 1.0]))
def test_matches_torchvision(seed, ratio, scale):
  rng = np.random.default_rng(seed)
  feat = rng.normal(size=(24, 20, 3)).astype(np.float32)
  # Boxes partly or fully outside the map, and tiny ones.
  rois = random_boxes(rng, 16, lo=-30.0, hi=1.2 * 20 / scale, min_size=0.1,
                      max_size=25 / scale)
  ref = torch_roi_align(feat, rois, 7, scale, ratio)
  for form in ra.FORMS:
    ours = ra.roi_align(jnp.asarray(feat), jnp.asarray(rois), 7, scale, ratio, form=form)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=1e-4, err_msg=form)


@pytest.mark.parametrize('form', ra.FORMS)
def test_gradient_matches_torch_autograd(form):
  rng = np.random.default_rng(0)
  feat = rng.normal(size=(12, 14, 2)).astype(np.float32)
  rois = random_boxes(rng, 5, hi=40.0, max_size=20.0)
  w = rng.normal(size=(5, 4, 4, 2)).astype(np.float32)
  g = jax.grad(lambda f: jnp.sum(
      ra.roi_align(f, jnp.asarray(rois), 4, 0.25, 2, form=form) * w))(jnp.asarray(feat))
  ft = torch.tensor(feat).permute(2, 0, 1)[None].requires_grad_(True)
  out = torchvision.ops.roi_align(ft, [torch.tensor(rois)], 4, 0.25, 2, aligned=True)
  (out * torch.tensor(w).permute(0, 3, 1, 2)).sum().backward()
  np.testing.assert_allclose(np.asarray(g), ft.grad[0].permute(1, 2, 0).numpy(), atol=1e-4)


def test_adaptive_sampling_ratio_rejected():
  with pytest.raises(ValueError, match='sampling_ratio'):
    ra.roi_align(jnp.zeros((4, 4, 1)), jnp.zeros((1, 4)), 2, 1.0, 0)


def test_fpn_level_rule():
  sizes = np.array([10, 111, 112, 224, 447, 448, 1000], np.float32)
  rois = np.stack([np.zeros_like(sizes), np.zeros_like(sizes), sizes, sizes], 1)
  lvl = np.asarray(ra.assign_fpn_levels(jnp.asarray(rois)))
  ref = np.clip(np.floor(4 + np.log2(sizes / 224 + 1e-6)), 2, 5)
  np.testing.assert_array_equal(lvl, ref)
  np.testing.assert_array_equal(lvl, [2, 2, 3, 4, 4, 5, 5])


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_multilevel_matches_per_level_torchvision(seed):
  rng = np.random.default_rng(seed)
  hw = (128, 96)
  feats = [rng.normal(size=(hw[0] // 2**l, hw[1] // 2**l, 4)).astype(np.float32)
           for l in (2, 3, 4, 5)]
  rois = random_boxes(rng, 24, lo=0.0, hi=90.0, min_size=4.0, max_size=120.0)
  ours, ours_taps = (np.asarray(ra.multilevel_roi_align(
      [jnp.asarray(f) for f in feats], jnp.asarray(rois), 7, 2, form=form)) for form in ra.FORMS)
  np.testing.assert_allclose(ours_taps, ours, atol=1e-5, rtol=1e-5)
  lvl = np.clip(np.floor(4 + np.log2(np.sqrt((rois[:, 2] - rois[:, 0]) *
                                             (rois[:, 3] - rois[:, 1])) / 224 + 1e-6)), 2, 5)
  for i in range(len(rois)):
    l = int(lvl[i])
    ref = torch_roi_align(feats[l - 2], rois[i:i + 1], 7, 2.0 ** -l, 2)
    np.testing.assert_allclose(ours[i:i + 1], ref, atol=1e-4, rtol=1e-4)


def test_jit_vmap_over_batch():
  rng = np.random.default_rng(1)
  feats = jnp.asarray(rng.normal(size=(2, 16, 16, 3)).astype(np.float32))
  rois = jnp.asarray(np.stack([random_boxes(rng, 6, hi=50) for _ in range(2)]))
  f = jax.jit(jax.vmap(lambda x, r: ra.roi_align(x, r, 5, 0.25, 2)))
  out = f(feats, rois)
  assert out.shape == (2, 6, 5, 5, 3)
  np.testing.assert_allclose(np.asarray(out[1]),
                             torch_roi_align(np.asarray(feats[1]), np.asarray(rois[1]), 5, 0.25, 2),
                             atol=1e-4)


def test_forms_give_equal_multilevel_gradients_in_bfloat16_and_float32():
  # The per-tap form's custom gradient against JAX's gradient of the gather
  # form, through the multi-level buffer, vmapped over a batch as the heads use it.
  rng = np.random.default_rng(3)
  feats = [rng.normal(size=(2, 64 // 2**l, 48 // 2**l, 3)).astype(np.float32) for l in range(4)]
  rois = jnp.asarray(np.stack([random_boxes(rng, 9, lo=-8.0, hi=70.0, min_size=2.0,
                                            max_size=80.0) for _ in range(2)]))
  w = jnp.asarray(rng.normal(size=(2, 9, 5, 5, 3)).astype(np.float32))
  for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)):
    def loss(fs, form):
      pooled = jax.vmap(lambda *a: ra.multilevel_roi_align(list(a[:4]), a[4], 5, 2, form=form))(
          *fs, rois)
      return jnp.sum(pooled.astype(jnp.float32) * w)
    fs = [jnp.asarray(f, dtype) for f in feats]
    g_gather, g_taps = (jax.jit(jax.grad(loss), static_argnums=1)(fs, form) for form in ra.FORMS)
    for a, b in zip(g_taps, g_gather):
      assert a.dtype == dtype
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                 atol=tol, rtol=tol)
