"""Touching and apart objects (protocol.touching_annotations, protocol.contact_metrics)
on hand-made masks, whose recall and AP are known by construction."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from zsi_jax.evaluation import protocol

H, W = 24, 40


def rle(mask):
  r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
  r['counts'] = r['counts'].decode('ascii')
  return r


def square(rows, cols):
  m = np.zeros((H, W), bool)
  m[rows[0]:rows[1], cols[0]:cols[1]] = True
  return m


def bbox(mask):
  ys, xs = np.nonzero(mask)
  return [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()),
          float(ys.max() + 1 - ys.min())]


# name -> (category, mask). B and C share an edge; D and E share only a corner.
OBJECTS = {
    'A': (1, square((2, 8), (2, 8))),
    'B': (1, square((2, 8), (12, 18))),
    'C': (2, square((2, 8), (18, 26))),
    'D': (2, square((12, 18), (30, 36))),
    'E': (1, square((18, 20), (36, 38))),
    'F': (2, square((12, 18), (2, 8))),
}
IDS = {name: k + 1 for k, name in enumerate(OBJECTS)}


def ground_truth(objects=OBJECTS, image_id=1):
  coco = COCO()
  coco.dataset = {
      'images': [{'id': image_id, 'height': H, 'width': W}],
      'categories': [{'id': 1, 'name': 'one'}, {'id': 2, 'name': 'two'}],
      'annotations': [dict(id=IDS[n], image_id=image_id, category_id=c, bbox=bbox(m),
                           area=float(m.sum()), iscrowd=0, segmentation=rle(m))
                      for n, (c, m) in objects.items()]}
  with contextlib.redirect_stdout(io.StringIO()):
    coco.createIndex()
  return coco


def detection(category, mask, score):
  return dict(image_id=1, category_id=category, segmentation=rle(mask), bbox=bbox(mask),
              score=score)


def brute_force_touching(masks):
  """Indices i of masks with a pixel of another mask within Chebyshev distance 1."""
  points = [np.argwhere(m) for m in masks]
  out = set()
  for i in range(len(masks)):
    for j in range(len(masks)):
      if i != j and len(points[i]) and len(points[j]):
        d = np.abs(points[i][:, None, :] - points[j][None, :, :]).max(-1)
        if (d <= 1).any():
          out.add(i)
  return out


def test_touching_objects_share_an_edge_or_a_corner():
  gt = ground_truth()
  found = protocol.touching_annotations(gt.dataset['annotations'], gt.dataset['images'])
  assert found == {IDS[n] for n in 'BCDE'}


def test_touching_equals_a_pixel_distance_loop_on_random_blobs():
  rng = np.random.default_rng(0)
  annotations, images = [], []
  expected = set()
  next_id = 1
  for image_id in range(1, 13):
    images.append({'id': image_id, 'height': H, 'width': W})
    masks = []
    for _ in range(rng.integers(1, 6)):
      m = rng.random((H, W)) < 0.5
      y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
      blob = np.zeros((H, W), bool)
      blob[y:y + rng.integers(1, 8), x:x + rng.integers(1, 8)] = True
      masks.append(blob & (m | ~m.any()))
      masks[-1][y, x] = True
    for k, m in enumerate(masks):
      annotations.append(dict(id=next_id + k, image_id=image_id, category_id=1, bbox=bbox(m),
                              segmentation=rle(m)))
    expected |= {next_id + i for i in brute_force_touching(masks)}
    next_id += len(masks)
  assert protocol.touching_annotations(annotations, images) == expected


def test_polygon_segmentations_are_decoded():
  a = dict(id=1, image_id=1, bbox=[2, 2, 4, 4], segmentation=[[2, 2, 6, 2, 6, 6, 2, 6]])
  b = dict(id=2, image_id=1, bbox=[6, 2, 4, 4], segmentation=[[6, 2, 10, 2, 10, 6, 6, 6]])
  far = dict(id=3, image_id=1, bbox=[30, 15, 4, 4], segmentation=[[30, 15, 34, 15, 34, 19, 30, 19]])
  images = [{'id': 1, 'height': H, 'width': W}]
  assert protocol.touching_annotations([a, b, far], images) == {1, 2}


def scenario():
  """Masks: A (apart) and C (touching) found exactly; B's mask spills over
  its neighbour C (IoU 36 / 84 < 0.5); F (apart) found exactly; D and E not
  found."""
  _, b = OBJECTS['B']
  _, c = OBJECTS['C']
  return [detection(1, OBJECTS['A'][1], 0.9), detection(2, c, 0.8),
          detection(1, b | c, 0.7), detection(2, OBJECTS['F'][1], 0.6)]


def test_contact_recall_and_ap_by_construction():
  gt = ground_truth()
  touching = {IDS[n] for n in 'BCDE'}
  m = protocol.contact_metrics(gt, scenario(), 'segm', [1, 2], touching)
  assert m['touching']['objects'] == 4 and m['apart']['objects'] == 2
  # Touching: class 1 (B, E) none found, class 2 (C, D) one of two.
  assert m['touching']['recall@100'] == pytest.approx((0 + 0.5) / 2)
  # Class 1's only touching-group detection is B's spilt mask, a false positive
  # (A's is matched to A, which is ignored); class 2: precision 1 up to recall 0.5.
  assert m['touching']['map@0.5'] == pytest.approx((0 + 51 / 101) / 2)
  # Apart: A and F found. C's detection (0.8) is matched to C, ignored here: it is
  # not a false positive ahead of F's, so class 2's AP is 1, not 0.5.
  assert m['apart']['recall@100'] == pytest.approx(1.0)
  assert m['apart']['map@0.5'] == pytest.approx(1.0)


def test_contact_of_gzsi_splits_seen_and_unseen():
  gt = ground_truth()
  touching = {IDS[n] for n in 'BCDE'}
  m = protocol.contact_metrics(gt, scenario(), 'segm', [1, 2], touching, seen_cat_ids=[1])
  t = m['touching']
  assert (t['seen_objects'], t['unseen_objects']) == (2, 2)
  assert t['seen_recall@100'] == pytest.approx(0.0)
  assert t['unseen_recall@100'] == pytest.approx(0.5)
  assert t['unseen_map@0.5'] == pytest.approx(51 / 101)
  assert m['apart']['seen_map@0.5'] == pytest.approx(1.0)


def test_ignoring_a_group_leaves_the_next_plain_evaluation_alone():
  gt = ground_truth()
  protocol.contact_metrics(gt, scenario(), 'segm', [1, 2], {IDS[n] for n in 'BCDE'})
  plain = protocol.zsi_metrics(gt, scenario(), 'segm', [1, 2])
  # All six objects count again: A, C, F found; class 1 1/3, class 2 2/3.
  assert plain['recall@100_iou0.5'] == pytest.approx((1 / 3 + 2 / 3) / 2)


def test_no_detections_give_zero_for_groups_with_objects():
  gt = ground_truth({'A': OBJECTS['A'], 'B': OBJECTS['B'], 'C': OBJECTS['C']})
  m = protocol.contact_metrics(gt, [], 'segm', [1, 2], {IDS['B'], IDS['C']})
  assert m['touching']['recall@100'] == 0.0 and m['apart']['recall@100'] == 0.0
  assert m['apart']['objects'] == 1
