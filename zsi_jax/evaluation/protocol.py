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

Contact (``contact_metrics``): the same recall and AP at IoU 0.5 for the
objects that touch another annotated object of their image and for those that
do not, each with the other group's ground truth ignored the way COCOeval
ignores crowds (a detection matched to an ignored object counts neither as a
hit nor as a false positive).
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
from typing import Dict, List, Optional, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools import mask as mask_utils
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


class _SubsetEval(COCOeval):
  """COCOeval that also ignores the ground truth outside ``keep`` (annotation ids)."""

  def __init__(self, gt, dt, iou_type, keep):
    super().__init__(gt, dt, iou_type)
    self._keep = keep

  def _prepare(self):
    super()._prepare()
    for objects in self._gts.values():
      for g in objects:
        g['ignore'] = g['ignore'] or g['id'] not in self._keep


def run_cocoeval(gt: COCO, results: List[dict], iou_type: str, cat_ids: Sequence[int],
                 iou_thresholds: Sequence[float] = IOU_THRESHOLDS, keep=None):
  """Runs COCOeval and returns per-category recall@100 and AP for each threshold.

  Args:
    gt: ground truth.
    results: COCO-format detections (``bbox`` or ``segmentation`` per entry).
    iou_type: 'bbox' or 'segm'.
    cat_ids: categories to evaluate, in the split's order.
    iou_thresholds: IoU thresholds.
    keep: None, or the annotation ids to score: the others are ignored (a
      detection matched to one is neither a hit nor a false positive).
  Returns:
    dict(recall [T, K], ap [T, K]) float arrays; NaN where a category has no
    ground truth (COCOeval's -1).
  """
  t, k = len(iou_thresholds), len(cat_ids)
  has_gt = np.array([any(keep is None or a in keep for a in gt.getAnnIds(catIds=[c],
                                                                      iscrowd=False))
                     for c in cat_ids])
  if not results:
    zero = np.where(has_gt[None, :], 0.0, np.nan) * np.ones((t, 1))
    return dict(recall=zero.copy(), ap=zero.copy())
  with _quiet():
    dt = gt.loadRes(copy.deepcopy(results))
    ev = COCOeval(gt, dt, iou_type) if keep is None else _SubsetEval(gt, dt, iou_type, keep)
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


def touching_annotations(annotations: Sequence[dict], images: Sequence[dict]) -> set:
  """Ids of the annotations whose mask touches or overlaps another annotation's
  mask in the same image: some pixel of the other lies within one pixel
  (8-neighbourhood) of the object.

  Args:
    annotations: COCO annotations (polygon or RLE ``segmentation``), all
      objects of the images (the possible neighbours as well).
    images: their COCO image entries (``id``, ``height``, ``width``).
  """
  size = {im['id']: (int(im['height']), int(im['width'])) for im in images}
  by_image: Dict[int, List[dict]] = {}
  for a in annotations:
    by_image.setdefault(a['image_id'], []).append(a)
  touching = set()
  for image_id, anns in by_image.items():
    if len(anns) < 2:
      continue
    h, w = size[image_id]
    masks = [_decode(a['segmentation'], h, w) for a in anns]
    grown = [_dilate(m) for m in masks]
    near = _boxes_near(np.asarray([a['bbox'] for a in anns], np.float64).reshape(-1, 4))
    for i in range(len(anns)):
      for j in range(i + 1, len(anns)):
        if near[i, j] and (grown[i] & masks[j]).any():
          touching.update((anns[i]['id'], anns[j]['id']))
  return touching


def _boxes_near(boxes: np.ndarray) -> np.ndarray:
  """[N, N] bool: the [x, y, w, h] boxes, grown by 2 pixels, intersect (a cheap
  pre-test: masks that touch always pass it)."""
  x0, y0 = boxes[:, 0] - 2, boxes[:, 1] - 2
  x1, y1 = boxes[:, 0] + boxes[:, 2] + 2, boxes[:, 1] + boxes[:, 3] + 2
  return ((np.minimum(x1[:, None], x1[None]) > np.maximum(x0[:, None], x0[None]))
          & (np.minimum(y1[:, None], y1[None]) > np.maximum(y0[:, None], y0[None])))


def _decode(segmentation, h: int, w: int) -> np.ndarray:
  """[h, w] bool mask of a COCO segmentation (polygons, RLE or uncompressed RLE)."""
  if isinstance(segmentation, list):
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
  elif isinstance(segmentation.get('counts'), list):
    rle = mask_utils.frPyObjects(segmentation, h, w)
  else:
    rle = segmentation
  return mask_utils.decode(rle).astype(bool)


def _dilate(mask: np.ndarray) -> np.ndarray:
  """The mask grown by one pixel in all 8 directions."""
  p = np.pad(mask, 1)
  h, w = mask.shape
  out = np.zeros_like(mask)
  for dy in range(3):
    for dx in range(3):
      out |= p[dy:dy + h, dx:dx + w]
  return out


CONTACT_GROUPS = ('touching', 'apart')


def contact_metrics(gt: COCO, results: List[dict], iou_type: str, cat_ids: Sequence[int],
                    touching: set, seen_cat_ids: Optional[Sequence[int]] = None
                    ) -> Dict[str, Dict[str, float]]:
  """Recall@100 and AP at IoU 0.5 of the touching and of the apart objects.

  Args:
    gt, results, iou_type, cat_ids, seen_cat_ids: as :func:`zsi_metrics`.
    touching: ids of the annotations that touch another object
      (:func:`touching_annotations`).
  Returns:
    {'touching' | 'apart': dict(objects, ``recall@100``, ``map@0.5``; with
    ``seen_cat_ids`` also ``seen_``/``unseen_`` of the three)}; means over the
    categories that have objects of the group.
  """
  evaluated = set(int(c) for c in cat_ids)
  category = {a['id']: int(a['category_id']) for a in gt.dataset['annotations']
              if int(a['category_id']) in evaluated and not a.get('iscrowd', 0)}
  groups = {'touching': {a for a in category if a in touching},
            'apart': {a for a in category if a not in touching}}
  seen = None if seen_cat_ids is None else set(int(c) for c in seen_cat_ids)
  out = {}
  for name, keep in groups.items():
    r = run_cocoeval(gt, results, iou_type, cat_ids, (0.5,), keep=keep)
    row = {'objects': len(keep), 'recall@100': _mean(r['recall'][0]), 'map@0.5': _mean(r['ap'][0])}
    if seen is not None:
      for part, sel in (('seen', lambda c: c in seen), ('unseen', lambda c: c not in seen)):
        idx = [j for j, c in enumerate(cat_ids) if sel(int(c))]
        row[f'{part}_objects'] = sum(1 for a in keep if sel(category[a]))
        row[f'{part}_recall@100'] = _mean(r['recall'][0, idx])
        row[f'{part}_map@0.5'] = _mean(r['ap'][0, idx])
    out[name] = row
  return out
