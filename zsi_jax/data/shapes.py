"""ZSI-Shapes: a synthetic COCO-format dataset that genuinely needs zero-shot transfer.

Classes are "<color> <shape>". Every unseen class is a new combination of a
color and a shape that both occur among the seen classes, and class vectors
are built from per-word vectors (class = normalised sum of its two words), so
an unseen class can only be recognised by composing what was learned about
its color and its shape. Backgrounds are cluttered (low-frequency noise and
strokes in the same colors), so color alone is not an object.

Two presets (``PRESETS``): 'default' (6 colors x 8 shapes, 36 seen / 12
unseen, where the full model's unseen recall saturates near 95%) and 'hard'
(see ``HARD``: 65 / 15 classes, rarer unseen words, smaller and more occluded
objects, distractor shapes of no class). Everything is deterministic from a
seed.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from zsi_jax.data import datasets

# Every color a preset may use (RGB); a preset picks its own list.
COLORS = {
    'red': (220, 40, 40), 'green': (40, 180, 60), 'blue': (50, 80, 230),
    'yellow': (235, 210, 40), 'magenta': (210, 50, 200), 'cyan': (40, 200, 210),
    'orange': (240, 140, 30), 'purple': (130, 60, 190),
}
SHAPES = ('circle', 'square', 'triangle', 'star', 'cross', 'ring', 'diamond', 'hexagon',
          'pentagon', 'ellipse')
# Shapes that are drawn but belong to no class (the hard preset's distractors).
DISTRACTOR_SHAPES = ('crescent', 'bar', 'arrow', 'semicircle')
# Common norm of the class vectors (that of the authors' COCO word2vec files).
CLASS_NORM = 0.7666


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
  """What to draw. The defaults are the default preset; ``PRESETS`` names the others."""
  seed: int = 0
  image_size: int = 128
  num_train: int = 2000
  num_val: int = 100
  num_test: int = 300
  max_instances: int = 4
  min_radius: float = 11.0
  max_radius: float = 26.0
  # Attribute vectors need far fewer dimensions than word2vec's 300; 64 keeps the
  # semantic layers (and the CPU main job) cheap. COCO uses the 300-d files.
  vector_dim: int = 64
  min_visible_fraction: float = 0.35
  name: str = 'zsi_shapes'
  colors: Tuple[str, ...] = ('red', 'green', 'blue', 'yellow', 'magenta', 'cyan')
  shapes: Tuple[str, ...] = SHAPES[:8]
  # Unseen class names; empty: color i is unseen with shapes i and i+3.
  unseen: Tuple[str, ...] = ()
  # Training and validation images draw a seen class with weight
  # rare_weight ** (number of its words in rare_words), so these words are
  # rarer in training than the others.
  rare_words: Tuple[str, ...] = ()
  rare_weight: float = 1.0
  strokes: Tuple[int, int] = (2, 6)          # clutter strokes per image: [low, high)
  distractors: Tuple[int, int] = (0, 0)      # objects of no class per image: [low, high]


# The hard preset (``make_shapes.py --preset hard``): 8 colors x 10 shapes, 65
# seen / 15 unseen classes as in COCO's split. Unseen classes are made of the
# rare words (cyan, orange and purple with three shapes each; ring, pentagon
# and ellipse with two common colors each), whose seen classes are drawn at a
# third of the rate (a ninth with two rare words). Objects are smaller, more
# per image and more occluded, among more strokes and 1-3 shapes of no class;
# orange and purple sit between colors that are classes already.
HARD = ShapesConfig(
    name='zsi_shapes_hard', max_instances=7, min_radius=7.0, max_radius=20.0,
    min_visible_fraction=0.25, colors=tuple(COLORS), shapes=SHAPES,
    unseen=('cyan circle', 'cyan square', 'cyan triangle', 'orange star', 'orange cross',
            'orange ring', 'purple diamond', 'purple hexagon', 'purple pentagon', 'red ring',
            'green ring', 'blue pentagon', 'yellow pentagon', 'magenta ellipse',
            'green ellipse'),
    rare_words=('cyan', 'orange', 'purple', 'ring', 'pentagon', 'ellipse'), rare_weight=1 / 3,
    strokes=(4, 10), distractors=(1, 3))
PRESETS = {'default': ShapesConfig(), 'hard': HARD}


def class_names(cfg: ShapesConfig = ShapesConfig()) -> List[str]:
  return [f'{c} {s}' for c in cfg.colors for s in cfg.shapes]


def class_split(cfg: ShapesConfig = ShapesConfig()) -> Tuple[List[str], List[str]]:
  """(seen, unseen) class names, each in ``class_names`` order.

  Default preset: color i is unseen with shapes i and i+3 (mod 8): 12 unseen
  classes; every color keeps 6 seen shapes and every shape at least 4 seen
  colors. Other presets list their unseen classes.
  """
  names = class_names(cfg)
  if cfg.unseen:
    unknown = sorted(set(cfg.unseen) - set(names))
    if unknown:
      raise ValueError(f'unseen classes {unknown} are not "<color> <shape>" of this preset')
    unseen = set(cfg.unseen)
  else:
    unseen = {f'{c} {cfg.shapes[(i + k) % len(cfg.shapes)]}'
              for i, c in enumerate(cfg.colors) for k in (0, 3)}
  return [n for n in names if n not in unseen], [n for n in names if n in unseen]


def class_weights(names: Sequence[str], cfg: ShapesConfig) -> np.ndarray:
  """Sampling probability of each class in training images (rare words drawn less)."""
  rare = set(cfg.rare_words)
  w = np.asarray([cfg.rare_weight ** sum(x in rare for x in n.split()) for n in names])
  return w / w.sum()


def _polygon(u, v, sides: int, apothem: float):
  angles = 2 * np.pi * np.arange(sides) / sides + np.pi / 2
  return np.max([u * np.cos(a) + v * np.sin(a) for a in angles], axis=0) <= apothem


def shape_mask(shape: str, u, v):
  """Inside-test of a unit-size shape in local coordinates u, v (arrays)."""
  r = np.sqrt(u * u + v * v)
  if shape == 'circle':
    return r <= 1.0
  if shape == 'square':
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8
  if shape == 'diamond':
    return np.abs(u) + np.abs(v) <= 1.0
  if shape == 'triangle':
    return (v >= -0.55) & (v <= 1.0 - 1.732 * np.abs(u))
  if shape == 'cross':
    return (((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95))
            | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95)))
  if shape == 'ring':
    return (r <= 1.0) & (r >= 0.55)
  if shape == 'star':
    phi = np.arctan2(v, u)
    return r <= 0.45 + 0.55 * (0.5 + 0.5 * np.cos(5 * phi))
  if shape == 'hexagon':
    return np.maximum(np.abs(u) * 0.866 + np.abs(v) * 0.5, np.abs(v)) <= 0.9
  if shape == 'pentagon':
    return _polygon(u, v, 5, 0.8)
  if shape == 'ellipse':
    return u * u + (v / 0.55) ** 2 <= 1.0
  if shape == 'crescent':
    return (r <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.8 ** 2)
  if shape == 'bar':
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 0.2)
  if shape == 'arrow':
    return (((u >= -1.0) & (u <= 0.2) & (np.abs(v) <= 0.15))
            | ((u >= 0.2) & (np.abs(v) <= 0.9 * (1.0 - u))))
  if shape == 'semicircle':
    return (r <= 1.0) & (v >= -0.2)
  raise ValueError(f'unknown shape {shape!r}; known: {SHAPES + DISTRACTOR_SHAPES}')


def _background(rng, cfg: ShapesConfig):
  """Low-frequency noise plus clutter strokes in the object colors."""
  size = cfg.image_size
  low = rng.uniform(60, 190, size=(5, 5, 3))
  img = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.BILINEAR),
                   np.float32)
  img += rng.normal(0, 6, size=img.shape)
  yy, xx = np.mgrid[0:size, 0:size]
  for _ in range(rng.integers(*cfg.strokes)):
    color = np.asarray(COLORS[cfg.colors[rng.integers(len(cfg.colors))]], np.float32)
    x0, y0, x1, y1 = rng.uniform(0, size, 4)
    d = np.abs((y1 - y0) * xx - (x1 - x0) * yy + x1 * y0 - y1 * x0) / max(
        np.hypot(x1 - x0, y1 - y0), 1e-3)
    t = ((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / max((x1 - x0) ** 2 + (y1 - y0) ** 2, 1e-3)
    stroke = (d <= rng.uniform(0.8, 1.8)) & (t >= 0) & (t <= 1)
    img[stroke] = color
  return img


@dataclasses.dataclass
class RenderCounts:
  """Per-image counts of what occlusion and distractors did."""
  dropped: int = 0        # instances occluded below min_visible_fraction (not annotated)
  occluded: int = 0       # annotated instances partly covered by a later shape
  distractors: int = 0    # shapes of no class drawn


def render_image(rng, classes: Sequence[str], cfg: ShapesConfig):
  """Renders one image with the given instance classes (painted in order).

  The preset's distractors (shapes of no class, never annotated) are painted
  at random places in that order, so they occlude and are occluded.
  Returns (uint8 image [S, S, 3], list of (class, visible mask [S, S] bool),
  RenderCounts).
  """
  s = cfg.image_size
  img = _background(rng, cfg)
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
  items = list(classes)
  lo, hi = cfg.distractors
  if hi > 0:
    for _ in range(int(rng.integers(lo, hi + 1))):
      shape = DISTRACTOR_SHAPES[int(rng.integers(len(DISTRACTOR_SHAPES)))]
      color = cfg.colors[int(rng.integers(len(cfg.colors)))]
      items.insert(int(rng.integers(len(items) + 1)), (color, shape))
  counts = RenderCounts()
  masks = []
  for item in items:
    distractor = isinstance(item, tuple)
    color, shape = item if distractor else item.split(' ', 1)
    rad = rng.uniform(cfg.min_radius, cfg.max_radius)
    cx, cy = rng.uniform(rad * 0.6, s - rad * 0.6, 2)
    th = rng.uniform(0, 2 * np.pi)
    dx, dy = (xx - cx) / rad, (yy - cy) / rad
    u = np.cos(th) * dx + np.sin(th) * dy
    v = -np.sin(th) * dx + np.cos(th) * dy
    m = shape_mask(shape, u, -v)
    if m.sum() < 20:
      continue
    rgb = np.clip(np.asarray(COLORS[color], np.float32) + rng.normal(0, 12, 3), 0, 255)
    img[m] = rgb + rng.normal(0, 5, size=(m.sum(), 3))
    masks = [(n, pm & ~m, full) for n, pm, full in masks]  # later shapes occlude earlier ones
    if distractor:
      counts.distractors += 1
    else:
      masks.append((item, m, m.sum()))
  kept = []
  for n, m, full in masks:
    if m.sum() >= max(20, cfg.min_visible_fraction * full):
      kept.append((n, m))
      counts.occluded += int(m.sum() < full)
    else:
      counts.dropped += 1
  return np.clip(img, 0, 255).astype(np.uint8), kept, counts


def word_vectors(words: Sequence[str], dim: int, seed: int) -> Dict[str, np.ndarray]:
  """One fixed random unit vector per word (seeded, independent of word order)."""
  out = {}
  for w in words:
    rng = np.random.default_rng([seed, *map(ord, w)])
    v = rng.normal(size=dim)
    out[w] = v / np.linalg.norm(v)
  return out


def class_vectors(names: Sequence[str], dim: int, seed: int, kind: str = 'semantic'):
  """[K, D] class vectors and the background vector [D].

  kind: 'semantic' (normalised sum of the words' vectors), 'onehot' (paper
  Table 6 control; D = K) or 'random' (one random vector per class).
  All class vectors are scaled to CLASS_NORM; background = their mean.
  """
  if kind == 'semantic':
    wv = word_vectors(sorted({w for n in names for w in n.split()}), dim, seed)
    vecs = np.stack([sum(wv[w] for w in n.split()) for n in names])
  elif kind == 'onehot':
    vecs = np.eye(len(names))
  elif kind == 'random':
    vecs = np.random.default_rng([seed, 7]).normal(size=(len(names), dim))
  else:
    raise ValueError(f"kind must be 'semantic', 'onehot' or 'random', got {kind!r}")
  vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True) * CLASS_NORM
  return vecs.astype(np.float32), vecs.mean(0).astype(np.float32)


def write_word2vec_text(path: str, vectors: Dict[str, np.ndarray]):
  """Writes ``{word: [D]}`` in word2vec's text format (gensim-loadable), so any
  "<color> <shape>" name, seen, unseen or never generated, gets its vector the
  way COCO names get theirs from a word2vec file."""
  dim = len(next(iter(vectors.values())))
  with open(path, 'w') as f:
    f.write(f'{len(vectors)} {dim}\n')
    for w, v in vectors.items():
      f.write(w + ' ' + ' '.join(f'{x:.9e}' for x in v) + '\n')


def _annotation(ann_id, image_id, cat_id, m):
  rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
  x, y, w, h = mask_utils.toBbox(rle).tolist()
  rle['counts'] = rle['counts'].decode('ascii')
  return dict(id=ann_id, image_id=image_id, category_id=cat_id, segmentation=rle,
              area=float(m.sum()), bbox=[x, y, w, h], iscrowd=0)


def generate(out_dir: str, cfg: ShapesConfig = ShapesConfig(), log=print) -> Dict[str, object]:
  """Writes the dataset; returns the summary of counts.

  Layout: images/*.png; annotations/{train,val,test_zsi,test_gzsi}.json;
  class_vectors{,_onehot,_random}.txt; word_vectors.txt (the per-word vectors,
  word2vec text format); split.json.
  """
  rng = np.random.default_rng(cfg.seed)
  seen, unseen = class_split(cfg)
  order = seen + unseen
  all_names = class_names(cfg)
  seen_p = class_weights(seen, cfg) if cfg.rare_weight != 1.0 else None
  cat_id = {n: all_names.index(n) + 1 for n in all_names}
  os.makedirs(os.path.join(out_dir, 'images'), exist_ok=True)
  os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
  cats = lambda names: [dict(id=cat_id[n], name=n, supercategory=n.split()[1]) for n in names]

  summary = {}
  records = {'train': [], 'val': [], 'test': []}
  dropped_total = occluded_total = distractors_total = 0
  image_id = ann_id = 0
  for split, n, pool in (('train', cfg.num_train, seen), ('val', cfg.num_val, seen),
                         ('test', cfg.num_test, order)):
    for _ in range(n):
      k = int(rng.integers(1, cfg.max_instances + 1))
      if seen_p is not None and pool is seen:
        names = [pool[i] for i in rng.choice(len(pool), k, p=seen_p)]
      else:
        names = [pool[i] for i in rng.integers(0, len(pool), k)]
      if split == 'test':  # every test image holds at least one unseen instance
        names[int(rng.integers(k))] = unseen[int(rng.integers(len(unseen)))]
      img, inst, counts = render_image(rng, names, cfg)
      dropped_total += counts.dropped
      if split == 'test' and not any(c in unseen for c, _ in inst):
        continue  # its unseen instance was occluded away: not a ZSI test image
      occluded_total += counts.occluded
      distractors_total += counts.distractors
      image_id += 1
      fname = f'{split}_{image_id:06d}.png'
      Image.fromarray(img).save(os.path.join(out_dir, 'images', fname))
      anns = []
      for c, m in inst:
        ann_id += 1
        anns.append(_annotation(ann_id, image_id, cat_id[c], m))
      records[split].append((dict(id=image_id, file_name=fname, height=cfg.image_size,
                                  width=cfg.image_size), anns))

  def write(name, recs, names, keep):
    keep_ids = {cat_id[n] for n in keep}
    images, anns = [], []
    for im, a in recs:
      images.append(im)
      anns.extend(x for x in a if x['category_id'] in keep_ids)
    with open(os.path.join(out_dir, 'annotations', f'{name}.json'), 'w') as f:
      json.dump(dict(images=images, annotations=anns, categories=cats(names)), f)
    summary[name] = dict(images=len(images), instances=len(anns))

  write('train', records['train'], seen, seen)
  write('val', records['val'], seen, seen)
  write('test_zsi', records['test'], unseen, unseen)
  write('test_gzsi', records['test'], order, order)

  files = {}
  for kind, suffix in (('semantic', ''), ('onehot', '_onehot'), ('random', '_random')):
    vecs, bg = class_vectors(order, cfg.vector_dim, cfg.seed, kind)
    files[kind] = f'class_vectors{suffix}.txt'
    datasets.write_vector_file(os.path.join(out_dir, files[kind]), vecs, bg)
  words = sorted({w for n in all_names for w in n.split()})
  write_word2vec_text(os.path.join(out_dir, 'word_vectors.txt'),
                      word_vectors(words, cfg.vector_dim, cfg.seed))
  split_info = dict(name=cfg.name, seen=seen, unseen=unseen,
                    category_ids={n: cat_id[n] for n in order}, vectors=files,
                    word_vectors='word_vectors.txt',
                    image_size=cfg.image_size, seed=cfg.seed)
  with open(os.path.join(out_dir, 'split.json'), 'w') as f:
    json.dump(split_info, f, indent=1)
  summary['occluded_instances_dropped'] = dropped_total
  summary['occluded_instances_kept'] = occluded_total
  summary['distractors'] = distractors_total
  for k, v in summary.items():
    log(f'{k}: {v}')
  return summary
