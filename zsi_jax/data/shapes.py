"""ZSI-Shapes: a synthetic COCO-format dataset that genuinely needs zero-shot transfer.

Classes are "<color> <shape>". Every unseen class is a new combination of a
color and a shape that both occur among the seen classes, and class vectors
are built from per-word vectors (class = normalised sum of its two words), so
an unseen class can only be recognised by composing what was learned about
its color and its shape. Backgrounds are cluttered (low-frequency noise and
strokes in the same colors), so color alone is not an object.

Everything is deterministic from a seed.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

COLORS = {
    'red': (220, 40, 40), 'green': (40, 180, 60), 'blue': (50, 80, 230),
    'yellow': (235, 210, 40), 'magenta': (210, 50, 200), 'cyan': (40, 200, 210),
}
SHAPES = ('circle', 'square', 'triangle', 'star', 'cross', 'ring', 'diamond', 'hexagon')
# Common norm of the class vectors (that of the authors' COCO word2vec files).
CLASS_NORM = 0.7666


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
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


def class_names() -> List[str]:
  return [f'{c} {s}' for c in COLORS for s in SHAPES]


def default_split() -> Tuple[List[str], List[str]]:
  """(seen, unseen) class names.

  Color i is unseen with shapes i and i+3 (mod 8): 12 unseen classes; every
  color keeps 6 seen shapes and every shape keeps at least 4 seen colors.
  """
  colors = list(COLORS)
  unseen = {(c, SHAPES[(i + k) % len(SHAPES)]) for i, c in enumerate(colors) for k in (0, 3)}
  seen = [f'{c} {s}' for c in colors for s in SHAPES if (c, s) not in unseen]
  unseen_names = [f'{c} {s}' for c in colors for s in SHAPES if (c, s) in unseen]
  return seen, unseen_names


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
  raise ValueError(f'unknown shape {shape!r}; known: {SHAPES}')


def _background(rng, size):
  """Low-frequency noise plus distractor strokes in the object colors."""
  low = rng.uniform(60, 190, size=(5, 5, 3))
  img = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((size, size), Image.BILINEAR),
                   np.float32)
  img += rng.normal(0, 6, size=img.shape)
  yy, xx = np.mgrid[0:size, 0:size]
  for _ in range(rng.integers(2, 6)):
    color = np.asarray(list(COLORS.values())[rng.integers(len(COLORS))], np.float32)
    x0, y0, x1, y1 = rng.uniform(0, size, 4)
    d = np.abs((y1 - y0) * xx - (x1 - x0) * yy + x1 * y0 - y1 * x0) / max(
        np.hypot(x1 - x0, y1 - y0), 1e-3)
    t = ((xx - x0) * (x1 - x0) + (yy - y0) * (y1 - y0)) / max((x1 - x0) ** 2 + (y1 - y0) ** 2, 1e-3)
    stroke = (d <= rng.uniform(0.8, 1.8)) & (t >= 0) & (t <= 1)
    img[stroke] = color
  return img


def render_image(rng, classes: Sequence[str], cfg: ShapesConfig):
  """Renders one image with the given instance classes (painted in order).

  Returns (uint8 image [S, S, 3], list of (class, visible mask [S, S] bool)),
  and the number of instances dropped for being mostly occluded.
  """
  s = cfg.image_size
  img = _background(rng, s)
  yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
  masks = []
  for name in classes:
    color, shape = name.split(' ', 1)
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
    masks.append((name, m, m.sum()))
  kept, dropped = [], 0
  for n, m, full in masks:
    if m.sum() >= max(20, cfg.min_visible_fraction * full):
      kept.append((n, m))
    else:
      dropped += 1
  return np.clip(img, 0, 255).astype(np.uint8), kept, dropped


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


def write_vector_file(path: str, vectors: np.ndarray, background: np.ndarray):
  """The authors' format: D rows x (1 + K) comma-separated columns, column 0 = background."""
  mat = np.concatenate([background[:, None], vectors.T], axis=1)
  np.savetxt(path, mat, delimiter=',', fmt='%.9e')


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
  seen, unseen = default_split()
  order = seen + unseen
  all_names = class_names()
  cat_id = {n: all_names.index(n) + 1 for n in all_names}
  os.makedirs(os.path.join(out_dir, 'images'), exist_ok=True)
  os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
  cats = lambda names: [dict(id=cat_id[n], name=n, supercategory=n.split()[1]) for n in names]

  summary = {}
  records = {'train': [], 'val': [], 'test': []}
  dropped_total = 0
  image_id = ann_id = 0
  for split, n, pool in (('train', cfg.num_train, seen), ('val', cfg.num_val, seen),
                         ('test', cfg.num_test, order)):
    for _ in range(n):
      k = int(rng.integers(1, cfg.max_instances + 1))
      names = [pool[i] for i in rng.integers(0, len(pool), k)]
      if split == 'test':  # every test image holds at least one unseen instance
        names[int(rng.integers(k))] = unseen[int(rng.integers(len(unseen)))]
      img, inst, dropped = render_image(rng, names, cfg)
      if split == 'test' and not any(c in unseen for c, _ in inst):
        dropped_total += dropped
        continue  # its unseen instance was occluded away: not a ZSI test image
      dropped_total += dropped
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
    write_vector_file(os.path.join(out_dir, files[kind]), vecs, bg)
  words = sorted({w for n in all_names for w in n.split()})
  write_word2vec_text(os.path.join(out_dir, 'word_vectors.txt'),
                      word_vectors(words, cfg.vector_dim, cfg.seed))
  split_info = dict(name='zsi_shapes', seen=seen, unseen=unseen,
                    category_ids={n: cat_id[n] for n in order}, vectors=files,
                    word_vectors='word_vectors.txt',
                    image_size=cfg.image_size, seed=cfg.seed)
  with open(os.path.join(out_dir, 'split.json'), 'w') as f:
    json.dump(split_info, f, indent=1)
  summary['occluded_instances_dropped'] = dropped_total
  for k, v in summary.items():
    log(f'{k}: {v}')
  return summary
