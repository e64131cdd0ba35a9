"""The ZSI / GZSI evaluation protocol (docs/REFERENCE_NOTES.md, "Evaluation protocol").

pycocotools' COCOeval with IoU thresholds [0.4, 0.5, 0.6]:
- Recall@100 at each threshold = COCOeval's recall at maxDets 100, area
  'all', averaged over categories that have ground truth;
- mAP = AP at IoU 0.5 (101-point interpolation), averaged over the same
  categories;
- GZSI also reports per-class AP and recall at 0.5, their means over seen and
  over unseen classes, and the harmonic mean HM = 2 s u / (s + u).

NaN rules (documented, as COCOeval does): a category without ground truth has
recall/AP -1 in COCOeval and is left out of every mean; a mean over no
category is NaN; an empty result set gives recall 0 and AP 0 for every
category with ground truth (pycocotools cannot load an empty result list, so
that case is computed here directly).
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from zsi_jax.jsonio import read_json

IOU_THRESHOLDS = (0.4, 0.5, 0.6)


def _quiet():
  return contextlib.redirect_stdout(io.StringIO())


def _mean(values) -> float:
  values = [v for v in values if v is not None and not math.isnan(v)]
  return float(np.mean(values)) if values else float('nan')


def ausuc(seen: Sequence[float], unseen: Sequence[float]) -> float:
  """Area under the seen-unseen curve (Chao et al., ECCV 2016): unseen against
  seen accuracy (here mAP, both in [0, 1]) over a sweep of the calibration,
  by the trapezoid rule between the points sorted by seen. The sweep's ends
  lie on the axes (only seen or only unseen classes detected); NaN points are
  left out."""
  points = sorted((s, u) for s, u in zip(seen, unseen) if s == s and u == u)
  if len(points) < 2:
    return float('nan')
  s, u = np.asarray(points).T
  return float(np.sum((s[1:] - s[:-1]) * (u[1:] + u[:-1]) / 2))


def harmonic_mean(a: float, b: float) -> float:
  """2ab / (a + b); 0 when both are 0, NaN when either is NaN."""
  if math.isnan(a) or math.isnan(b):
    return float('nan')
  return 0.0 if a + b == 0 else 2 * a * b / (a + b)


# What COCOeval reads of the ground truth, per entry.
_IMAGE_KEYS = ('id', 'height', 'width')
_ANNOTATION_KEYS = ('id', 'image_id', 'category_id', 'bbox', 'area', 'segmentation')


def load_ground_truth(ann_file: str, cat_ids: Sequence[int]) -> COCO:
  """The test split's ground truth, checked for everything scoring reads.

  Run before the model so that a flaw in the file fails in seconds, not after
  hours of inference: valid JSON with ``images``, ``annotations`` and
  ``categories``, every evaluated category listed, every image and annotation
  with the keys COCOeval reads. Errors name the file and the entry.
  """
  data = read_json(ann_file, 'ground-truth file')
  for key in ('images', 'annotations', 'categories'):
    if not isinstance(data.get(key), list):
      raise ValueError(f'{ann_file}: no {key!r} list; COCO scoring needs it')
  listed = {c.get('id') for c in data['categories']}
  missing = [int(c) for c in cat_ids if int(c) not in listed]
  if missing:
    raise ValueError(f'{ann_file}: categories {missing} are evaluated but not listed in '
                     '"categories"')
  for kind, entries, keys in (('image', data['images'], _IMAGE_KEYS),
                              ('annotation', data['annotations'], _ANNOTATION_KEYS)):
    for entry in entries:
      lacking = [k for k in keys if k not in entry]
      if lacking:
        raise ValueError(f'{ann_file}: {kind} {entry.get("id", "?")} lacks {lacking}')
  gt = COCO()
  gt.dataset = data
  with _quiet():
    gt.createIndex()
  return gt


def run_cocoeval(gt: COCO, results: List[dict], iou_type: str, cat_ids: Sequence[int],
                 iou_thresholds: Sequence[float] = IOU_THRESHOLDS):
  """Runs COCOeval and returns per-category recall@100 and AP for each threshold.

  Args:
    gt: ground truth.
    results: COCO-format detections (``bbox`` or ``segmentation`` per entry).
    iou_type: 'bbox' or 'segm'.
    cat_ids: categories to evaluate, in the split's order.
    iou_thresholds: IoU thresholds.
  Returns:
    dict(recall [T, K], ap [T, K]) float arrays; NaN where a category has no
    ground truth (COCOeval's -1).
  """
  t, k = len(iou_thresholds), len(cat_ids)
  has_gt = np.array([len(gt.getAnnIds(catIds=[c], iscrowd=False)) > 0 for c in cat_ids])
  if not results:
    zero = np.where(has_gt[None, :], 0.0, np.nan) * np.ones((t, 1))
    return dict(recall=zero.copy(), ap=zero.copy())
  with _quiet():
    dt = gt.loadRes(copy.deepcopy(results))
    ev = COCOeval(gt, dt, iou_type)
    ev.params.iouThrs = np.asarray(iou_thresholds, np.float64)
    ev.params.catIds = list(cat_ids)
    ev.params.maxDets = [1, 10, 100]
    ev.evaluate()
    ev.accumulate()
  area_all = ev.params.areaRngLbl.index('all')
  m100 = ev.params.maxDets.index(100)
  # COCOeval sorts its category ids; its results come back in the split's order.
  order = [list(ev.params.catIds).index(c) for c in cat_ids]
  recall = ev.eval['recall'][:, order, area_all, m100].astype(np.float64)        # [T, K]
  prec = ev.eval['precision'][:, :, order, area_all, m100].astype(np.float64)    # [T, R, K]
  ap = np.full((t, k), np.nan)
  for i in range(t):
    for j in range(k):
      p = prec[i, :, j]
      if np.all(p == -1):   # no ground truth for this category
        continue
      ap[i, j] = float(np.mean(np.where(p > -1, p, 0.0)))
  recall = np.where(recall > -1, recall, np.nan)
  return dict(recall=recall, ap=ap)


def zsi_metrics(gt: COCO, results: List[dict], iou_type: str, cat_ids: Sequence[int],
                seen_cat_ids: Optional[Sequence[int]] = None,
                iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> Dict[str, float]:
  """The paper's table row for one setting.

  Args:
    gt: test ground truth (ZSI: unseen annotations only; GZSI: all).
    results: detections in COCO format.
    iou_type: 'bbox' (ZSD/GZSD) or 'segm' (ZSI/GZSI).
    cat_ids: evaluated categories in the split's order.
    seen_cat_ids: for GZSI, which of ``cat_ids`` are seen classes.
  Returns:
    dict with ``recall@100_iou{t}`` for each threshold and ``map@0.5``; for
    GZSI also ``seen_/unseen_/hm_`` ``map@0.5`` and ``recall@100``; plus
    ``per_class`` {cat_id: (ap@0.5, recall@0.5)}.
  """
  r = run_cocoeval(gt, results, iou_type, cat_ids, iou_thresholds)
  i50 = list(iou_thresholds).index(0.5)
  out: Dict[str, object] = {}
  for i, thr in enumerate(iou_thresholds):
    out[f'recall@100_iou{thr:g}'] = _mean(r['recall'][i])
  out['map@0.5'] = _mean(r['ap'][i50])
  out['per_class'] = {int(c): (float(r['ap'][i50, j]), float(r['recall'][i50, j]))
                      for j, c in enumerate(cat_ids)}
  if seen_cat_ids is not None:
    seen = set(int(c) for c in seen_cat_ids)
    for name, sel in (('seen', lambda c: c in seen), ('unseen', lambda c: c not in seen)):
      idx = [j for j, c in enumerate(cat_ids) if sel(int(c))]
      out[f'{name}_map@0.5'] = _mean(r['ap'][i50, idx])
      out[f'{name}_recall@100'] = _mean(r['recall'][i50, idx])
    out['hm_map@0.5'] = harmonic_mean(out['seen_map@0.5'], out['unseen_map@0.5'])
    out['hm_recall@100'] = harmonic_mean(out['seen_recall@100'], out['unseen_recall@100'])
  return out
