"""experiments/mask_failures.py on hand-made objects with known answers."""
import numpy as np
from pycocotools import mask as mask_utils

from experiments import mask_failures


def _ann(ann_id, mask, category=1, image_id=1, score=None):
  rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  bbox = mask_utils.toBbox(rle).tolist()
  rle['counts'] = rle['counts'].decode('ascii')
  out = dict(id=ann_id, image_id=image_id, category_id=category, segmentation=rle, bbox=bbox)
  if score is not None:
    out['score'] = score
  return out


def _square(y, x, size=10, shape=(40, 60)):
  m = np.zeros(shape, bool)
  m[y:y + size, x:x + size] = True
  return m


def test_misses_touching_and_wrong_pixels():
  a, b, c = _square(5, 10), _square(5, 20), _square(25, 45)   # a and b touch; c is alone
  objects = [_ann(1, a), _ann(2, b), _ann(3, c)]
  # a's detection: a's box exactly, but its mask is a's left half plus all of b.
  leak = a.copy()
  leak[:, 15:20] = False
  leak |= b
  det_a = _ann(10, leak, score=0.9)
  det_a['bbox'] = objects[0]['bbox']
  # A worse detection of a's class elsewhere is ignored (not the best box).
  stray = _ann(11, _square(25, 0), score=0.8)
  results = [det_a, stray, _ann(12, b, score=0.9), _ann(13, c, score=0.9)]
  # The mask IoU of a's detection: 50 right pixels / (100 + 100 wrong) = 0.25.
  report = mask_failures.analyse(objects, objects, results, [0.5, 0.2])
  r = report['0.5']
  assert (r['objects'], r['box_hits'], r['mask_misses']) == (3, 3, 1)
  assert r['misses_touching'] == 1.0 and r['hits_touching'] == 0.5   # b touches a; c nothing
  assert r['miss_wrong_pixels'] == 100 and r['miss_wrong_pixels_on_objects'] == 100
  assert r['miss_lost_pixels'] == 50
  assert report['0.2']['mask_misses'] == 0                           # 0.25 passes at 0.2
  # Only objects of the split count; neighbours come from all the annotations.
  only_c = mask_failures.analyse(objects[2:], objects, results, [0.5])['0.5']
  assert (only_c['objects'], only_c['mask_misses'], only_c['hits_touching']) == (1, 0, 0.0)


def test_box_iou_matches_a_direct_count():
  assert mask_failures.box_iou([0, 0, 10, 10], [5, 0, 10, 10]) == 50 / 150
  assert mask_failures.box_iou([0, 0, 10, 10], [20, 20, 5, 5]) == 0.0
