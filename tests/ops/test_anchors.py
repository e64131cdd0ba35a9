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
