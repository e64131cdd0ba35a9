"""Seen/unseen class splits of COCO (docs/REFERENCE_NOTES.md, "Splits"); label order = list order.

Custom splits come from a JSON file ``{"name": ..., "seen": [...], "unseen": [...]}``.
"""
from __future__ import annotations

import os
from typing import Dict, List, Tuple

from zsi_jax.jsonio import read_json

# COCO's 80 class names in category-id order.
COCO_CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange',
    'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant',
    'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone',
    'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase', 'scissors',
    'teddy bear', 'hair drier', 'toothbrush')

SEEN_48_17 = (
    'person', 'bicycle', 'car', 'motorcycle', 'truck', 'boat', 'bench', 'bird', 'horse', 'sheep',
    'zebra', 'giraffe', 'backpack', 'handbag', 'skis', 'kite', 'surfboard', 'bottle', 'spoon',
    'bowl', 'banana', 'apple', 'orange', 'broccoli', 'carrot', 'pizza', 'donut', 'chair', 'bed',
    'tv', 'laptop', 'remote', 'microwave', 'oven', 'refrigerator', 'book', 'clock', 'vase',
    'toothbrush', 'train', 'bear', 'suitcase', 'frisbee', 'fork', 'sandwich', 'toilet', 'mouse',
    'toaster')
UNSEEN_48_17 = (
    'bus', 'dog', 'cow', 'elephant', 'umbrella', 'tie', 'skateboard', 'cup', 'knife', 'cake',
    'couch', 'keyboard', 'sink', 'scissors', 'airplane', 'cat', 'snowboard')
UNSEEN_65_15 = (
    'airplane', 'train', 'parking meter', 'cat', 'bear', 'suitcase', 'frisbee', 'snowboard', 'fork',
    'sandwich', 'hot dog', 'toilet', 'mouse', 'toaster', 'hair drier')
SEEN_65_15 = tuple(c for c in COCO_CLASSES if c not in UNSEEN_65_15)

BUILTIN = {'48_17': (SEEN_48_17, UNSEEN_48_17), '65_15': (SEEN_65_15, UNSEEN_65_15)}


def get_split(name_or_path: str) -> Tuple[str, List[str], List[str]]:
  """(name, seen, unseen) for '48_17', '65_15' or a custom split JSON file."""
  if name_or_path in BUILTIN:
    seen, unseen = BUILTIN[name_or_path]
    return name_or_path, list(seen), list(unseen)
  if not os.path.exists(name_or_path):
    raise FileNotFoundError(f'split {name_or_path!r} is neither {sorted(BUILTIN)} nor a file')
  d = read_json(name_or_path, 'split file')
  for key in ('seen', 'unseen'):
    if not isinstance(d.get(key), list) or not d[key]:
      raise ValueError(f'{name_or_path}: {key!r} must be a non-empty list of class names')
  both = set(d['seen']) & set(d['unseen'])
  if both:
    raise ValueError(f'{name_or_path}: classes both seen and unseen: {sorted(both)}')
  name = d.get('name', os.path.splitext(os.path.basename(name_or_path))[0])
  return name, list(d['seen']), list(d['unseen'])


def make_zero_shot_splits(train: Dict, val: Dict, seen: List[str], unseen: List[str],
                          source: Tuple[str, str] = ('train', 'val')):
  """COCO dicts -> (train, test_zsi, test_gzsi, counts), following the paper's protocol.

  Train: train images with a seen object and no unseen object (seen
  annotations only). ZSI test: val images with an unseen object (unseen
  annotations only). GZSI test: the same images with seen + unseen annotations.
  Annotations of classes outside the split are dropped and counted.
  Categories keep their COCO ids and follow the split's order.
  """
  def cats_by_name(d, where):
    if 'categories' not in d:
      raise ValueError(f'{where}: no "categories"')
    return {c['name']: c for c in d['categories']}

  out_counts = {}
  by_name = cats_by_name(train, source[0])
  missing = [n for n in seen + unseen if n not in by_name]
  if missing:
    raise ValueError(f'{source[0]}: split classes not among its categories: {missing}')
  seen_ids = {by_name[n]['id'] for n in seen}
  unseen_ids = {by_name[n]['id'] for n in unseen}
  cat_list = lambda names: [by_name[n] for n in names]

  def group(d, where):
    for key in ('images', 'annotations'):
      if key not in d:
        raise ValueError(f'{where}: missing {key!r}')
    image_ids = {im['id'] for im in d['images']}
    per = {}
    for a in d['annotations']:
      if a.get('image_id') not in image_ids:
        raise ValueError(f'{where}: annotation {a.get("id")} refers to unknown image '
                         f'{a.get("image_id")}')
      per.setdefault(a['image_id'], []).append(a)
    return per

  tr = group(train, source[0])
  keep, anns, other = [], [], 0
  for im in train['images']:
    a = tr.get(im['id'], [])
    cats = {x['category_id'] for x in a}
    if cats & unseen_ids or not cats & seen_ids:
      continue
    keep.append(im)
    for x in a:
      if x['category_id'] in seen_ids:
        anns.append(x)
      else:
        other += 1
  train_out = dict(images=keep, annotations=anns, categories=cat_list(seen))
  out_counts['train'] = dict(images=len(keep), instances=len(anns), other_classes_dropped=other)

  va = group(val, source[1])
  test_imgs = [im for im in val['images']
               if {x['category_id'] for x in va.get(im['id'], [])} & unseen_ids]
  zsi_anns, gzsi_anns, other = [], [], 0
  for im in test_imgs:
    for x in va[im['id']]:
      if x['category_id'] in unseen_ids:
        zsi_anns.append(x)
        gzsi_anns.append(x)
      elif x['category_id'] in seen_ids:
        gzsi_anns.append(x)
      else:
        other += 1
  zsi = dict(images=test_imgs, annotations=zsi_anns, categories=cat_list(unseen))
  gzsi = dict(images=test_imgs, annotations=gzsi_anns, categories=cat_list(seen + unseen))
  out_counts['test_zsi'] = dict(images=len(test_imgs), instances=len(zsi_anns))
  out_counts['test_gzsi'] = dict(images=len(test_imgs), instances=len(gzsi_anns),
                                 other_classes_dropped=other)
  return train_out, zsi, gzsi, out_counts
