"""The ZSI/GZSI protocol on cases whose recall and AP are known by construction,
and against stock COCOeval at IoU 0.5."""
import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from zsi_jax.evaluation import protocol


def make_gt(anns, cats=(1, 2, 3), images=(1, 2)):
  coco = COCO()
  coco.dataset = {
      'images': [{'id': i, 'height': 100, 'width': 100} for i in images],
      'categories': [{'id': c, 'name': f'c{c}'} for c in cats],
      'annotations': [dict(id=k + 1, image_id=im, category_id=c, bbox=list(b), area=b[2] * b[3],
                           iscrowd=0) for k, (im, c, b) in enumerate(anns)],
  }
  with contextlib.redirect_stdout(io.StringIO()):
    coco.createIndex()
  return coco


def det(im, c, b, s):
  return {'image_id': im, 'category_id': c, 'bbox': list(b), 'score': s}


def test_half_recall_and_known_ap():
  gt = make_gt([(1, 1, (10, 10, 20, 20)), (1, 1, (60, 60, 20, 20))], cats=(1,))
  res = [det(1, 1, (10, 10, 20, 20), 0.9), det(1, 1, (40, 0, 10, 10), 0.8)]
  m = protocol.zsi_metrics(gt, res, 'bbox', [1])
  for t in (0.4, 0.5, 0.6):
    assert m[f'recall@100_iou{t:g}'] == pytest.approx(0.5)
  # Precision is 1 up to recall 0.5 and 0 after: 51 of 101 recall points.
  assert m['map@0.5'] == pytest.approx(51 / 101)


def test_iou_thresholds_are_04_05_06():
  gt = make_gt([(1, 1, (0, 0, 20, 20))], cats=(1,))
  # Same height, shifted right: IoU = 20*13 / (20*20 + 20*20 - 20*13) = 0.4815.
  res = [det(1, 1, (7, 0, 20, 20), 0.9)]
  m = protocol.zsi_metrics(gt, res, 'bbox', [1])
  assert m['recall@100_iou0.4'] == 1.0
  assert m['recall@100_iou0.5'] == 0.0
  assert m['recall@100_iou0.6'] == 0.0


def test_categories_without_ground_truth_are_left_out():
  gt = make_gt([(1, 1, (10, 10, 20, 20))])
  res = [det(1, 1, (10, 10, 20, 20), 0.9), det(2, 2, (10, 10, 20, 20), 0.9)]
  m = protocol.zsi_metrics(gt, res, 'bbox', [1, 2, 3])
  assert m['recall@100_iou0.5'] == 1.0 and m['map@0.5'] == pytest.approx(1.0)
  assert math.isnan(m['per_class'][2][0]) and math.isnan(m['per_class'][3][1])


def test_empty_results_and_images_without_detections():
  gt = make_gt([(1, 1, (10, 10, 20, 20)), (2, 2, (10, 10, 20, 20))])
  m = protocol.zsi_metrics(gt, [], 'bbox', [1, 2, 3])
  assert m['recall@100_iou0.5'] == 0.0 and m['map@0.5'] == 0.0
  m = protocol.zsi_metrics(gt, [det(1, 1, (10, 10, 20, 20), 0.5)], 'bbox', [1, 2, 3])
  assert m['recall@100_iou0.5'] == pytest.approx(0.5)


def test_gzsi_seen_unseen_harmonic_mean():
  gt = make_gt([(1, 1, (10, 10, 20, 20)), (1, 2, (50, 50, 20, 20)), (2, 2, (10, 10, 20, 20))],
               cats=(1, 2))
  res = [det(1, 1, (10, 10, 20, 20), 0.9), det(1, 2, (50, 50, 20, 20), 0.8)]
  m = protocol.zsi_metrics(gt, res, 'bbox', [1, 2], seen_cat_ids=[1])
  assert m['seen_recall@100'] == 1.0 and m['unseen_recall@100'] == pytest.approx(0.5)
  assert m['hm_recall@100'] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
  assert m['unseen_map@0.5'] == pytest.approx(51 / 101)


def test_categories_keep_the_split_order_when_it_is_not_sorted():
  # COCOeval sorts category ids internally; each number must still belong to
  # its own category when the split lists them unsorted (GZSI: seen then
  # unseen, with interleaved ids). Category 3 (seen) is found, 1 and 2 are not.
  gt = make_gt([(1, 1, (10, 10, 20, 20)), (1, 2, (50, 50, 20, 20)), (2, 3, (10, 10, 20, 20))])
  res = [det(2, 3, (10, 10, 20, 20), 0.9), det(1, 3, (70, 70, 10, 10), 0.5)]
  m = protocol.zsi_metrics(gt, res, 'bbox', [3, 1, 2], seen_cat_ids=[3])
  assert m['per_class'][3] == (pytest.approx(1.0), pytest.approx(1.0))
  assert m['per_class'][1] == (0.0, 0.0) and m['per_class'][2] == (0.0, 0.0)
  assert m['seen_map@0.5'] == pytest.approx(1.0) and m['unseen_map@0.5'] == 0.0
  assert m['seen_recall@100'] == pytest.approx(1.0) and m['unseen_recall@100'] == 0.0


def test_matches_stock_cocoeval_at_iou_05():
  rng = np.random.default_rng(0)
  anns, res = [], []
  for im in (1, 2):
    for _ in range(6):
      c = int(rng.integers(1, 4))
      b = (*rng.uniform(0, 60, 2), *rng.uniform(5, 40, 2))
      anns.append((im, c, b))
      if rng.random() < 0.8:
        jitter = np.asarray(b) + rng.normal(0, 3, 4)
        res.append(det(im, c, tuple(jitter), float(rng.random())))
    for _ in range(4):
      res.append(det(im, int(rng.integers(1, 4)), (*rng.uniform(0, 60, 2), 20, 20),
                     float(rng.random())))
  gt = make_gt(anns)
  ours = protocol.run_cocoeval(gt, res, 'bbox', [1, 2, 3])
  with contextlib.redirect_stdout(io.StringIO()):
    ev = COCOeval(gt, gt.loadRes(res), 'bbox')
    ev.evaluate()
    ev.accumulate()
  # Stock thresholds are 0.5:0.95; index 0 is 0.5. Ours: index 1 is 0.5.
  stock_recall = ev.eval['recall'][0, :, 0, 2]
  np.testing.assert_allclose(ours['recall'][1], stock_recall)
  stock_ap = ev.eval['precision'][0, :, :, 0, 2].mean(axis=0)
  np.testing.assert_allclose(ours['ap'][1], stock_ap)


def test_ausuc_is_the_area_under_known_curves():
  # A straight line from (1, 0) to (0, 1): area 1/2; a staircase; unsorted input;
  # NaN points left out; a single point has no area.
  assert protocol.ausuc([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
  assert protocol.ausuc([1.0, 0.0, 0.5], [0.0, 1.0, 0.5]) == pytest.approx(0.5)
  # (0, .8) -> (.4, .8) -> (.6, .2) -> (1, 0): .32 + .2 * .5 + .4 * .1 = .46
  assert protocol.ausuc([0.0, 0.4, 0.6, 1.0], [0.8, 0.8, 0.2, 0.0]) == pytest.approx(0.46)
  assert protocol.ausuc([0.0, float('nan'), 1.0], [1.0, 0.3, 0.0]) == pytest.approx(0.5)
  assert math.isnan(protocol.ausuc([0.3], [0.4]))


def test_load_ground_truth_checks_what_scoring_reads(tmp_path):
  import json
  good = dict(images=[dict(id=1, height=10, width=10, file_name='a.png')],
              annotations=[dict(id=1, image_id=1, category_id=2, bbox=[0, 0, 4, 4], area=16,
                                segmentation=[[0, 0, 4, 0, 4, 4]], iscrowd=0)],
              categories=[dict(id=2, name='x')])
  path = tmp_path / 'gt.json'
  path.write_text(json.dumps(good))
  assert protocol.load_ground_truth(str(path), [2]).getAnnIds() == [1]
  with pytest.raises(ValueError, match=r'categories \[3\] are evaluated but not listed'):
    protocol.load_ground_truth(str(path), [2, 3])
  del good['annotations'][0]['area']
  path.write_text(json.dumps(good))
  with pytest.raises(ValueError, match=r"gt.json: annotation 1 lacks \['area'\]"):
    protocol.load_ground_truth(str(path), [2])
