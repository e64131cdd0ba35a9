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
from zsi_jax.jsonio import read_json, write_json


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
  vector_file: str = 'class_vectors.txt'   # the class-vector file inside root

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


def pad_class_vectors(vectors, k_max: int):
  """[K, D] -> ([k_max, D] float32, [k_max] bool).

  K > k_max, a shape other than [K, D] and non-finite values are errors that
  name what is wrong (a NaN in one vector would otherwise silence every class).
  """
  vectors = np.asarray(vectors, np.float32)
  if vectors.ndim != 2:
    raise ValueError(f'class vectors must be a [K, D] matrix, got shape {vectors.shape}')
  bad = np.flatnonzero(~np.all(np.isfinite(vectors), axis=1))
  if bad.size:
    raise ValueError(f'class vectors {bad.tolist()} (0-based rows) contain NaN or inf')
  k, d = vectors.shape
  if k > k_max:
    raise ValueError(f'{k} classes but room for max_classes={k_max}: raise max_classes '
                     '(config.data.max_classes; predict.py --max_classes)')
  out = np.zeros((k_max, d), np.float32)
  out[:k] = vectors
  return out, np.arange(k_max) < k


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


def write_vector_file(path: str, vectors: np.ndarray, background: np.ndarray):
  """The authors' format (``read_vector_file``'s): D rows x (1 + K) comma-separated
  columns, column 0 = background."""
  mat = np.concatenate([background[:, None], vectors.T], axis=1)
  storage.write_text(path, '\n'.join(','.join(f'{x:.9e}' for x in row) for row in mat) + '\n')


def read_vocabulary_file(path: str, size: int, dim: int) -> np.ndarray:
  """A vocabulary file (D rows x V comma-separated columns) -> [V, D] float32,
  checked against the model's ``size`` (V) and the class vectors' ``dim`` (D)."""
  if not storage.exists(path):
    raise FileNotFoundError(f'vocabulary file not found: {path} (config.data.vocabulary; '
                            'make it with data_prep/make_word_vectors.py --vocabulary WORDS '
                            '--vocab_out FILE)')
  try:
    mat = np.loadtxt(io.StringIO(storage.read_text(path)), delimiter=',', dtype=np.float64,
                     ndmin=2)
  except ValueError as e:
    raise ValueError(f'{path}: not a comma-separated matrix of numbers: {e}') from e
  if mat.shape != (dim, size):
    raise ValueError(f'{path}: {mat.shape[0]} dimensions x {mat.shape[1]} words, but the class '
                     f'vectors have {dim} dimensions and config.model.box_head.vocabulary_size '
                     f'is {size}')
  if not np.all(np.isfinite(mat)):
    raise ValueError(f'{path}: contains NaN or inf')
  return mat.T.astype(np.float32)


def _make_hint(root: str) -> str:
  """The command that writes a dataset at ``root``: a COCO split for a root named
  like one (``zsi_65_15``, as in the COCO configs), else ZSI-Shapes."""
  split = storage.basename(root.rstrip('/'))[len('zsi_'):]
  if split in ('48_17', '65_15'):
    return (f'python data_prep/make_coco_splits.py --coco_root COCO --split {split} --out {root} '
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
                                   if split.get('word_vectors') else None),
                     vector_file=vectors)


# ---------------------------------------------------------------------------
# The class space of a trained model, kept in its workdir (and in exported
# models): what inference needs of the dataset, so a workdir segments images
# with the dataset gone. Evaluation still reads the dataset (ground truth).
CLASSES_FILE = 'classes.json'
CLASSES_FORMAT = 'zsi_jax.classes'
CLASSES_VERSION = 1
# Word-vector files up to this size are copied into the workdir, so names
# outside the class list work there too (ZSI-Shapes'; not GoogleNews').
WORD_VECTORS_COPY_BYTES = 64 << 20


def class_space_record(info: DatasetInfo, word_vectors: Optional[str] = None) -> dict:
  """The JSON record of ``info``'s class space (``word_vectors``: the path to record)."""
  norms = np.linalg.norm(info.vectors, axis=1)
  return dict(format=CLASSES_FORMAT, version=CLASSES_VERSION, dataset_root=info.root,
              vector_file=info.vector_file, word_vectors=word_vectors,
              seen=list(info.seen), unseen=list(info.unseen),
              category_ids={n: int(info.category_ids[n]) for n in info.names},
              dim=int(info.vectors.shape[1]), norm=float(norms.mean()) if norms.size else 0.0,
              vectors=[[float(x) for x in row] for row in info.vectors],
              background=[float(x) for x in info.background])


def class_space_from_record(record: dict, where: str, base: str = '') -> DatasetInfo:
  """A validated record -> DatasetInfo (``where`` names it in errors; a relative
  ``word_vectors`` path is taken inside ``base``)."""
  if not isinstance(record, dict) or record.get('format') != CLASSES_FORMAT:
    raise ValueError(f'{where}: not a zsi_jax class-space record')
  if record.get('version') != CLASSES_VERSION:
    raise ValueError(f'{where}: class-space version {record.get("version")!r}; this zsi_jax '
                     f'reads version {CLASSES_VERSION}')
  missing = [k for k in ('seen', 'unseen', 'category_ids', 'dim', 'vectors', 'background')
             if k not in record]
  if missing:
    raise ValueError(f'{where}: missing {missing}')
  names = list(record['seen']) + list(record['unseen'])
  if len(set(names)) != len(names):
    raise ValueError(f'{where}: class names repeat')
  dim = int(record['dim'])
  try:
    vecs = np.asarray(record['vectors'], np.float32).reshape(len(names), dim)
    bg = np.asarray(record['background'], np.float32).reshape(dim)
  except ValueError:
    raise ValueError(f'{where}: expected {len(names)} class vectors and a background vector '
                     f'of dimension {dim}') from None
  if not (np.all(np.isfinite(vecs)) and np.all(np.isfinite(bg))):
    raise ValueError(f'{where}: class vectors contain NaN or inf')
  no_id = [n for n in names if n not in record['category_ids']]
  if no_id:
    raise ValueError(f'{where}: no category id for {no_id}')
  wv = record.get('word_vectors')
  if wv and not storage.is_url(wv) and not wv.startswith('/'):
    wv = storage.join(base, wv)
  return DatasetInfo(root=record.get('dataset_root') or '', seen=list(record['seen']),
                     unseen=list(record['unseen']), category_ids=dict(record['category_ids']),
                     vectors=vecs, background=bg, word_vectors=wv or None,
                     vector_file=record.get('vector_file') or '')


def write_class_space(workdir: str, info: DatasetInfo) -> str:
  """Writes ``WORKDIR/classes.json`` (and a copy of a small word-vector file).

  A workdir holds one class space: if it has another one already, a
  ValueError says what differs and nothing is written.
  """
  path = storage.join(workdir, CLASSES_FILE)
  if storage.exists(path):
    saved = class_space_from_record(read_json(path), path, workdir)
    differs = [k for k, a, b in (
        ('seen classes', saved.seen, info.seen), ('unseen classes', saved.unseen, info.unseen),
        ('class vectors', saved.vectors.tolist(), info.vectors.tolist()),
        ('background vector', saved.background.tolist(), info.background.tolist()))
        if a != b]
    if differs:
      raise ValueError(f'{path} holds other {" and ".join(differs)} than '
                       f'{storage.join(info.root, info.vector_file)}: a workdir trains one class '
                       'space; use a new --workdir (or the dataset and vectors it was trained on)')
    return path
  word_vectors = info.word_vectors
  if word_vectors and storage.exists(word_vectors) and \
     storage.size(word_vectors) <= WORD_VECTORS_COPY_BYTES:
    local = storage.join('word_vectors', storage.basename(word_vectors))
    storage.write_bytes(storage.join(workdir, local), storage.read_bytes(word_vectors))
    word_vectors = local
  write_json(path, class_space_record(info, word_vectors))
  return path


def read_class_space(workdir: str) -> Optional[DatasetInfo]:
  """The class space saved in ``workdir``, or None for a workdir written before
  zsi_jax kept one (then the dataset itself is the source)."""
  path = storage.join(workdir, CLASSES_FILE)
  if not storage.exists(path):
    return None
  return class_space_from_record(read_json(path, 'class-space file'), path, workdir)
