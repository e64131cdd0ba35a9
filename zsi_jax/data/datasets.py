"""A prepared dataset on disk: split definition, class vectors, annotation files.

Layout (written by data_prep/make_shapes.py; COCO splits use the same):
``ROOT/split.json`` ({name, seen, unseen, category_ids, vectors}),
``ROOT/annotations/{train,val,test_zsi,test_gzsi}.json``, ``ROOT/images/``,
``ROOT/<vector file>`` in the authors' format (D rows x 1+K columns,
column 0 = background, then seen then unseen classes). ROOT may be a local
folder or a bucket URL (``gs://...``).
"""
from __future__ import annotations

import dataclasses
import io
from typing import List, Optional

import numpy as np

from zsi_jax import storage
from zsi_jax.jsonio import read_json


@dataclasses.dataclass
class DatasetInfo:
  root: str
  seen: List[str]
  unseen: List[str]
  category_ids: dict
  vectors: np.ndarray      # [S + U, D] in seen-then-unseen order
  background: np.ndarray   # [D]
  image_dirs: dict = dataclasses.field(default_factory=dict)  # split -> folder (COCO)
  # A gensim-loadable word-vector file that gives any class name a vector
  # (ZSI-Shapes writes its per-word vectors); None when the dataset has none.
  word_vectors: Optional[str] = None

  @property
  def names(self):
    return self.seen + self.unseen

  def cat_ids(self, names):
    return [self.category_ids[n] for n in names]

  def class_rows(self, max_classes: int = 0) -> int:
    """Rows of the padded class matrix for any list of this dataset's classes:
    ``max_classes`` (the config's ``data.max_classes``) or all its classes."""
    return max(max_classes or 0, len(self.names))

  def vectors_of(self, names):
    idx = [self.names.index(n) for n in names]
    return self.vectors[idx]

  def annotation_file(self, split):
    return storage.join(self.root, 'annotations', f'{split}.json')

  def image_dir(self, split: str = 'train') -> str:
    """Image folder of an annotation split ('train' or a test split)."""
    if self.image_dirs:
      key = 'train' if split == 'train' else 'test'
      return storage.join(self.root, self.image_dirs[key])
    return storage.join(self.root, 'images')


def read_vector_file(path: str, num_classes: int):
  """Authors' format -> (vectors [K, D], background [D]); checks the column count."""
  if not storage.exists(path):
    raise FileNotFoundError(f'class-vector file not found: {path}')
  try:
    mat = np.loadtxt(io.StringIO(storage.read_text(path)), delimiter=',', dtype=np.float64,
                     ndmin=2)
  except ValueError as e:
    raise ValueError(f'{path}: not a comma-separated matrix of numbers: {e}') from e
  if mat.shape[1] != num_classes + 1:
    raise ValueError(f'{path}: {mat.shape[1]} columns, but the split has {num_classes} classes '
                     f'(+1 background column expected = {num_classes + 1})')
  if not np.all(np.isfinite(mat)):
    raise ValueError(f'{path}: contains NaN or inf')
  return mat[:, 1:].T.astype(np.float32), mat[:, 0].astype(np.float32)


def _make_hint(root: str) -> str:
  """The command that writes a dataset at ``root``: a COCO split for a root named
  like one (``zsi_65_15``, as in the COCO configs), else ZSI-Shapes."""
  split = storage.basename(root.rstrip('/'))[len('zsi_'):]
  if split in ('48_17', '65_15'):
    return (f'python data_prep/make_coco_splits.py --coco-root COCO --split {split} --out {root} '
            '(COCO: the folder holding annotations/instances_train2014.json, train2014/ and '
            'val2014/)')
  return f'python data_prep/make_shapes.py --out {root}'


def load_dataset(root: str, vectors: str = 'class_vectors.txt') -> DatasetInfo:
  """Reads ``root/split.json`` and the chosen vector file."""
  path = storage.join(root, 'split.json')
  if not storage.exists(path):
    raise FileNotFoundError(f'{path} not found: make the dataset first: {_make_hint(root)}')
  split = read_json(path)
  for key in ('seen', 'unseen', 'category_ids'):
    if key not in split:
      raise ValueError(f'{path}: missing {key!r}')
  both = sorted(set(split['seen']) & set(split['unseen']))
  if both:
    raise ValueError(f'{path}: {both} both seen and unseen; a class is one or the other')
  names = split['seen'] + split['unseen']
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f'{path}: {repeated} listed more than once')
  missing = [n for n in names if n not in split['category_ids']]
  if missing:
    raise ValueError(f'{path}: no category id for {missing}')
  vecs, bg = read_vector_file(storage.join(root, vectors), len(split['seen']) + len(split['unseen']))
  return DatasetInfo(root=root, seen=split['seen'], unseen=split['unseen'],
                     category_ids=split['category_ids'], vectors=vecs, background=bg,
                     image_dirs=split.get('image_dirs', {}),
                     word_vectors=(storage.join(root, split['word_vectors'])
                                   if split.get('word_vectors') else None))
