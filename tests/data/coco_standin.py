"""A COCO-2014-shaped stand-in: the layout and annotation format of COCO 2014 at a few images.

``write(root)`` makes ``root/annotations/instances_{train,val}2014.json`` and
``root/{train,val}2014/COCO_*.jpg``: the 80 real COCO categories with their real
ids (from the real annotations in ``fixtures/``), 640x480 and 480x640 JPEGs,
polygon annotations (one object of two polygons) and crowd annotations in
uncompressed RLE, as COCO stores them. Which image holds which classes is
chosen so that the 65/15 and 48/17 splits treat images differently (``IMAGES``;
``EXPECTED`` says what each split must keep), and one class ('hair drier')
is outside the 48/17 split altogether.
"""
import json
import os

import numpy as np
from PIL import Image, ImageDraw

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'instances_val2017_sample.json')

# (file stem, (width, height), [(class name, iscrowd)]) per source split.
IMAGES = {
    'train2014': [
        ('t1', (640, 480), [('person', 0), ('car', 0)]),
        ('t2', (480, 640), [('person', 0), ('person', 1)]),     # a crowd of people
        ('t3', (640, 480), [('dog', 0), ('bicycle', 0)]),       # dog: unseen in 48/17 only
        ('t4', (480, 640), [('cat', 0), ('person', 0)]),        # cat: unseen in both
        ('t5', (640, 480), [('bus', 0), ('horse', 0)]),         # bus: unseen in 48/17 only
        ('t6', (480, 640), [('hair drier', 0), ('bench', 0)]),  # hair drier: unseen / outside
    ],
    'val2014': [   # few test images: each costs an R101 pass at 1344x1344 per setting
        ('v1', (640, 480), [('airplane', 0), ('person', 0), ('person', 1)]),
        # toaster: unseen in 65/15, seen in 48/17; hair drier: outside 48/17
        ('v2', (480, 640), [('cat', 0), ('dog', 0), ('toaster', 0), ('hair drier', 0),
                            ('bus', 0)]),
        ('v3', (640, 480), [('person', 0), ('car', 0)]),        # no unseen class in either
    ],
}

# What make_coco_splits.py must write: image stems of train and of the test
# splits (ZSI and GZSI hold the same images), and its counts.
EXPECTED = {
    '65_15': dict(train=['t1', 't2', 't3', 't5'], test=['v1', 'v2'], counts=dict(
        train=dict(images=4, instances=8, other_classes_dropped=0),
        test_zsi=dict(images=2, instances=4),
        test_gzsi=dict(images=2, instances=8, other_classes_dropped=0))),
    '48_17': dict(train=['t1', 't2', 't6'], test=['v1', 'v2'], counts=dict(
        train=dict(images=3, instances=5, other_classes_dropped=1),
        test_zsi=dict(images=2, instances=4),
        test_gzsi=dict(images=2, instances=7, other_classes_dropped=1))),
}


def file_name(folder: str, stem: str) -> str:
  return f'COCO_{folder}_{int(stem[1:]):012d}.jpg'


def _polygon(rng, cx, cy, radius, points=7):
  """A star-shaped polygon around (cx, cy), as COCO's flat [x1, y1, x2, y2, ...]."""
  angles = np.sort(rng.uniform(0, 2 * np.pi, points))
  radii = radius * rng.uniform(0.6, 1.0, points)
  return [round(float(v), 2) for a, r in zip(angles, radii)
          for v in (cx + r * np.cos(a), cy + r * np.sin(a))]


def _uncompressed_rle(mask: np.ndarray) -> dict:
  """[h, w] 0/1 -> COCO's uncompressed RLE: run lengths in column-major order, zeros first."""
  flat = mask.flatten(order='F').astype(np.int8)
  changes = np.flatnonzero(np.diff(flat)) + 1
  runs = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
  if flat[0] == 1:
    runs = [0] + runs
  return {'counts': runs, 'size': list(mask.shape)}


def _box(mask: np.ndarray):
  ys, xs = np.nonzero(mask)
  return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
          float(ys.max() - ys.min() + 1)]


def write(root: str, seed: int = 0) -> dict:
  """Writes the stand-in under ``root``; returns ``{folder: {stem: image id}}``."""
  rng = np.random.default_rng(seed)
  with open(FIXTURE) as f:
    categories = json.load(f)['categories']
  cat_id = {c['name']: c['id'] for c in categories}
  assert len(cat_id) == 80
  ids, ann_id = {}, 1
  os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
  for folder, images in IMAGES.items():
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    out_images, out_anns, ids[folder] = [], [], {}
    for stem, (w, h), objects in images:
      image_id = (1 if folder == 'train2014' else 500000) + int(stem[1:])
      ids[folder][stem] = image_id
      pixels = rng.integers(90, 160, (h // 8, w // 8, 3), dtype=np.uint8)
      canvas = Image.fromarray(pixels).resize((w, h), Image.BILINEAR)
      draw = ImageDraw.Draw(canvas)
      for k, (name, crowd) in enumerate(objects):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = (k + 1) * w / (len(objects) + 1), rng.uniform(0.35, 0.65) * h
        radius = min(w, h) * rng.uniform(0.12, 0.2)
        polys = [_polygon(rng, cx, cy, radius)]
        if k == 0 and not crowd:      # the first object comes in two parts, as occluded ones do
          polys.append(_polygon(rng, cx, cy + 1.4 * radius, radius / 3, points=5))
        mask = Image.new('L', (w, h), 0)
        for p in polys:
          ImageDraw.Draw(mask).polygon(p, fill=1)
          draw.polygon(p, fill=color)
        mask = np.asarray(mask)
        segmentation = _uncompressed_rle(mask) if crowd else polys
        out_anns.append(dict(id=ann_id, image_id=image_id, category_id=cat_id[name],
                             segmentation=segmentation, area=float(mask.sum()),
                             bbox=_box(mask), iscrowd=crowd))
        ann_id += 1
      name = file_name(folder, stem)
      canvas.save(os.path.join(root, folder, name), quality=90)
      out_images.append(dict(id=image_id, file_name=name, width=w, height=h, license=1,
                             date_captured='2013-11-14 11:18:45'))
    coco = dict(info=dict(description='COCO-2014-shaped stand-in (zsi_jax tests)'),
                licenses=[dict(id=1, name='test')], images=out_images,
                annotations=out_anns, categories=categories)
    with open(os.path.join(root, 'annotations', f'instances_{folder}.json'), 'w') as f:
      json.dump(coco, f)
  return ids
