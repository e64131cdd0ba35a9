"""Where masks miss while boxes hit: the objects that count for box recall but not mask recall.

python experiments/mask_failures.py --workdir WORKDIR [--split zsi] [--iou 0.5,0.6]

Reads eval.py's detections (WORKDIR/eval/{split}_results.json) and the
dataset's annotations. For each ground-truth object of the split it takes the
detection of the object's class with the highest box IoU (a diagnostic
matching, not COCOeval's greedy one) and calls the object a *mask miss* at a
threshold when that box IoU reaches it and the mask IoU does not. For misses
and for mask hits it reports how many touch another annotated object (any
class: the GZSI annotations of the image) and where the misses' wrong pixels
are: on another object or on the background.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from scipy import ndimage

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsi_jax import jsonio  # noqa: E402


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
  """IoU of two COCO [x, y, w, h] boxes."""
  iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
  ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
  inter = iw * ih
  union = a[2] * a[3] + b[2] * b[3] - inter
  return inter / union if union > 0 else 0.0


def analyse(objects: List[dict], all_objects: List[dict], results: List[dict],
            thresholds: Sequence[float]) -> Dict[str, dict]:
  """Mask misses at each threshold; see the module docstring.

  Args:
    objects: the split's annotations (COCO dicts with RLE segmentations).
    all_objects: every annotation of the same images (the possible neighbours).
    results: detections (COCO results with RLE segmentations).
  Returns:
    {str(threshold): dict(objects, box_hits, mask_misses, misses_touching,
    hits_touching, miss_wrong_pixels_on_objects, miss_wrong_pixels, miss_lost_pixels)}
    (the touching values are fractions of misses / mask hits).
  """
  by_key: Dict[tuple, List[dict]] = {}
  for d in results:
    by_key.setdefault((d['image_id'], d['category_id']), []).append(d)
  by_image: Dict[int, List[dict]] = {}
  for a in all_objects:
    by_image.setdefault(a['image_id'], []).append(a)
  union_cache: Dict[int, tuple] = {}

  def objects_of(image_id):
    # Each image's masks decoded once: (annotation ids, [N, H, W] masks).
    if image_id not in union_cache:
      anns = by_image.get(image_id, [])
      union_cache[image_id] = ([a['id'] for a in anns],
                               [mask_utils.decode(a['segmentation']).astype(bool) for a in anns])
    return union_cache[image_id]

  rows = []
  for g in objects:
    candidates = by_key.get((g['image_id'], g['category_id']), [])
    if not candidates:
      continue
    det = max(candidates, key=lambda d: box_iou(d['bbox'], g['bbox']))
    truth = mask_utils.decode(g['segmentation']).astype(bool)
    pred = mask_utils.decode(det['segmentation']).astype(bool)
    others = np.zeros_like(truth)
    for ann_id, m in zip(*objects_of(g['image_id'])):
      if ann_id != g['id']:
        others |= m
    wrong = pred & ~truth
    rows.append(dict(box=box_iou(det['bbox'], g['bbox']),
                     mask=(pred & truth).sum() / max((pred | truth).sum(), 1),
                     touching=bool((ndimage.binary_dilation(truth) & others).any()),
                     wrong=int(wrong.sum()), wrong_on_objects=int((wrong & others).sum()),
                     lost=int((truth & ~pred).sum())))
  out = {}
  for t in thresholds:
    hits = [r for r in rows if r['box'] >= t]
    misses = [r for r in hits if r['mask'] < t]
    mask_hits = [r for r in hits if r['mask'] >= t]
    frac = lambda rs, key: float(np.mean([r[key] for r in rs])) if rs else float('nan')
    out[str(t)] = dict(
        objects=len(objects), box_hits=len(hits), mask_misses=len(misses),
        misses_touching=frac(misses, 'touching'), hits_touching=frac(mask_hits, 'touching'),
        miss_wrong_pixels=int(sum(r['wrong'] for r in misses)),
        miss_wrong_pixels_on_objects=int(sum(r['wrong_on_objects'] for r in misses)),
        miss_lost_pixels=int(sum(r['lost'] for r in misses)))
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--workdir', required=True)
  p.add_argument('--split', default='zsi', choices=['zsi', 'gzsi'])
  p.add_argument('--iou', default='0.5,0.6')
  p.add_argument('--data', default='', help="dataset root (default: the workdir's config)")
  a = p.parse_args()
  root = a.data or jsonio.read_json(os.path.join(a.workdir, 'config.json'))['data']['root']
  gt = jsonio.read_json(os.path.join(root, 'annotations', f'test_{a.split}.json'))
  everything = jsonio.read_json(os.path.join(root, 'annotations', 'test_gzsi.json'))
  results = jsonio.read_json(os.path.join(a.workdir, 'eval', f'{a.split}_results.json'))
  report = analyse(gt['annotations'], everything['annotations'], results,
                   [float(t) for t in a.iou.split(',')])
  for t, r in report.items():
    share = r['miss_wrong_pixels_on_objects'] / max(r['miss_wrong_pixels'], 1)
    print(f'IoU {t}: {r["mask_misses"]} of {r["box_hits"]} box hits miss the mask '
          f'({r["objects"]} objects); touching another object: {100 * r["misses_touching"]:.0f}% '
          f'of the misses, {100 * r["hits_touching"]:.0f}% of the mask hits; the misses\' wrong '
          f'pixels on another object: {100 * share:.0f}%')
  print(json.dumps(report))


if __name__ == '__main__':
  main()
