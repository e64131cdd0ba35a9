"""Detections -> COCO results: coordinates, category ids, RLE masks pycocotools can read."""
import numpy as np
from pycocotools import mask as mask_utils

from zsi_jax.evaluation import results


def test_image_results_masks_and_ids():
  m = np.zeros((3, 28, 28), np.float32)
  m[:, 7:21, 7:21] = 0.9  # the central half of each box
  det = dict(boxes=np.array([[0, 0, 56, 56], [56, 56, 112, 112], [0, 0, 1, 1]], np.float32),
             scores=np.array([0.9, 0.8, 0.0]), classes=np.array([0, 1, -1]),
             valid=np.array([True, True, False]), masks=m)
  res = results.image_results(7, det, scale=2.0, orig_hw=(60, 60), cat_ids=[5, 9])
  assert len(res) == 2
  assert [r['category_id'] for r in res] == [5, 9]
  assert res[0]['bbox'] == [0.0, 0.0, 28.0, 28.0]
  dec = mask_utils.decode(res[0]['segmentation'])
  assert dec.shape == (60, 60)
  # The central half of a 28-px box: rows/cols 7..20.
  assert dec[7:21, 7:21].all() and dec.sum() == 14 * 14
  assert results.image_results(1, {**det, 'valid': np.zeros(3, bool)}, 1.0, (60, 60), [5, 9]) == []
