"""Anchors against torchvision's AnchorGenerator."""
import numpy as np
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from zsi_jax.ops import anchors


@pytest.mark.parametrize('hw', [(128, 192), (256, 256), (320, 448)])
def test_anchors_match_torchvision(hw):
  strides = (4, 8, 16, 32, 64)
  gen = AnchorGenerator(tuple((8 * s,) for s in strides), ((0.5, 1.0, 2.0),) * len(strides))
  h, w = hw
  maps = [torch.zeros(1, 1, fh, fw) for fh, fw in anchors.feature_sizes(hw, strides)]
  ref = gen(ImageList(torch.zeros(1, 3, h, w), [hw]), maps)[0].numpy()
  ours = anchors.generate_anchors(hw, strides)
  assert [a.shape[0] for a in ours] == [m.shape[2] * m.shape[3] * 3 for m in maps]
  np.testing.assert_array_equal(np.concatenate(ours), ref)


def test_feature_sizes_round_up():
  assert anchors.feature_sizes((100, 130), (4, 32)) == [(25, 33), (4, 5)]


def test_validity_marks_border_crossing_anchors():
  a = np.array([[0, 0, 10, 10], [-1, 0, 10, 10], [5, 5, 64, 32], [5, 5, 65, 32]], np.float32)
  np.testing.assert_array_equal(anchors.anchor_validity(a, (32, 64)), [True, False, True, False])
  np.testing.assert_array_equal(anchors.anchor_validity(a, (32, 64), allowed_border=1.0),
                                [True, True, True, True])


from hypothesis import given, settings, strategies as st  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([(4.0,), (8.0,), (4.0, 8.0)]))
def test_property_random_sizes_match_torchvision(hm, wm, scales):
  hw = (64 * hm, 64 * wm)
  strides = (4, 8, 16, 32, 64)
  sizes = tuple(tuple(s * sc for sc in scales) for s in strides)
  gen = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
  maps = [torch.zeros(1, 1, fh, fw) for fh, fw in anchors.feature_sizes(hw, strides)]
  ref = gen(ImageList(torch.zeros(1, 3, *hw), [hw]), maps)[0].numpy()
  ours = np.concatenate(anchors.generate_anchors(hw, strides, scales))
  np.testing.assert_array_equal(ours, ref)


def test_validity_under_jit_and_vmap_with_per_image_sizes():
  a = jnp.asarray(np.concatenate(anchors.generate_anchors((128, 128))))
  hws = jnp.array([[128, 128], [64, 100]])
  valid = jax.jit(jax.vmap(lambda hw: anchors.anchor_validity(a, hw)))(hws)
  np.testing.assert_array_equal(np.asarray(valid[1]),
                                anchors.anchor_validity(np.asarray(a), (64, 100)))
  assert valid[0].sum() > valid[1].sum()
