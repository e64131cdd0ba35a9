"""COCO-format splits -> a TFDS dataset in array_record files (no TensorFlow needed).

One example per image, holding what :func:`input_pipeline.make_example` needs:

| feature | shape, dtype | meaning |
|---|---|---|
| `image` | bytes | the image file's encoded bytes, as stored (PNG/JPEG) |
| `file_name` | text | path of the source image (for error messages) |
| `image_id`, `height`, `width` | int64, int32, int32 | from the annotation file |
| `boxes` | `[N,4]` float32 | xyxy pixels, clipped to the image (as :func:`load_coco`) |
| `labels` | `[N]` int32 | class index in the split's ``cat_ids`` order |
| `category_id` | `[N]` int32 | COCO category id |
| `is_crowd` | `[N]` bool | COCO iscrowd |
| `masks` | `{counts: [N] text, size: [N,2] int32}` | compressed COCO RLE |

Polygons and (compressed) RLE are all stored as compressed RLE, so every
segmentation round-trips exactly through pycocotools. Annotations that
``load_coco`` skips (other categories, degenerate boxes) are counted per split
in ``builder.info.metadata['splits'][split]['skipped']``, next to the split's
``cat_ids`` and the ``fingerprint`` of its source (the annotation file's
SHA-256, the number and total bytes of its image files): a dataset whose
source changed is refused, by ``build`` (without overwrite) and by the
training's loader, instead of being read stale.

  builder = tfds_coco.build('data/shapes', ['train', 'val'], 'data/shapes_tfds')
  source = tfds_coco.load_source('data/shapes_tfds', 'train')   # random access

The dataset folder may be a bucket URL. array_record reads and writes local
files only, so a dataset for a bucket is written locally and uploaded, and
one in a bucket is read from this host's copy (``storage.local_copy``, made
once and checked by file sizes).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from zsi_jax import storage
from zsi_jax.data import datasets, images
from zsi_jax.data.input_pipeline import load_coco, to_rle
from zsi_jax.jsonio import read_json

logger = logging.getLogger(__name__)

VERSION = '1.0.0'
# Class indices of the standard ZSI splits follow the evaluation settings:
# training / seen-class validation use the seen classes, ZSI tests the unseen
# ones, GZSI tests all (see evaluation/runner.SETTINGS).
_SPLIT_CLASSES = {'train': 'seen', 'val': 'seen', 'test_zsi': 'unseen', 'test_gzsi': 'all'}

# split name -> (annotation json, image folder)
SplitFiles = Dict[str, Tuple[str, str]]


def _features():
  return tfds.features.FeaturesDict({
      'image': tfds.features.Tensor(shape=(), dtype=np.object_),
      'file_name': tfds.features.Text(),
      'image_id': tfds.features.Scalar(dtype=np.int64),
      'height': tfds.features.Scalar(dtype=np.int32),
      'width': tfds.features.Scalar(dtype=np.int32),
      'boxes': tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
      'labels': tfds.features.Tensor(shape=(None,), dtype=np.int32),
      'category_id': tfds.features.Tensor(shape=(None,), dtype=np.int32),
      'is_crowd': tfds.features.Tensor(shape=(None,), dtype=np.bool_),
      'masks': tfds.features.Sequence({
          'counts': tfds.features.Text(),
          'size': tfds.features.Tensor(shape=(2,), dtype=np.int32),
      }),
  })


class ZsiCoco(tfds.core.GeneratorBasedBuilder):
  """Instances of COCO-format splits; configured by constructor arguments.

  Args:
    split_files: split name -> (annotation json, image folder).
    split_cat_ids: split name -> category ids in class order.
    **kwargs: for ``GeneratorBasedBuilder`` (data_dir, file_format, ...).
  """

  VERSION = tfds.core.Version(VERSION)
  # Keep the annotation file's image order: evaluation passes run in file order
  # and example index i is record i of load_coco.
  disable_shuffling = True
  # No checksums/metadata files beside the code. (TFDS would look them up via
  # `code_path`, which needs the importlib_resources backport for package modules.)
  code_path = None

  def __init__(self, *, split_files: Optional[SplitFiles] = None,
               split_cat_ids: Optional[Mapping[str, Sequence[int]]] = None, **kwargs):
    self.split_files = dict(split_files or {})
    self.split_cat_ids = {k: [int(c) for c in v] for k, v in (split_cat_ids or {}).items()}
    super().__init__(**kwargs)

  def _info(self):
    # DatasetInfo directly: dataset_info_from_configs looks for a package folder.
    return tfds.core.DatasetInfo(
        builder=self, description='COCO-format instances for zero-shot instance segmentation',
        features=_features(), metadata=tfds.core.MetadataDict(),
        disable_shuffling=self.disable_shuffling)

  def _split_generators(self, dl_manager):
    del dl_manager  # everything is local
    gens, meta = {}, {}
    for split, (ann_file, image_dir) in self.split_files.items():
      cat_ids = self.split_cat_ids[split]
      records, skipped = load_coco(ann_file, image_dir, cat_ids)
      logger.info('%s: %d images; skipped annotations: %s', ann_file, len(records), skipped)
      meta[split] = dict(annotation_file=ann_file, image_dir=image_dir, cat_ids=cat_ids,
                         skipped=skipped, images=len(records),
                         fingerprint=source_fingerprint(ann_file, image_dir))
      gens[split] = self._generate_examples(records, cat_ids, ann_file, split)
    self.info.metadata['splits'] = meta
    return gens

  def _generate_examples(self, records, cat_ids, ann_file, split):
    from tqdm import tqdm
    for i, rec in enumerate(tqdm(records, desc=split, unit='image', leave=False)):
      # Integer keys in file order (shuffling is disabled, so they fix the order).
      yield i, encode_record(rec, cat_ids, ann_file)


def _read_checked(rec: dict) -> bytes:
  """The image file's bytes, after checking it opens and matches the json's size."""
  path = rec['file']
  try:
    data = storage.read_bytes(path)
  except FileNotFoundError:
    raise FileNotFoundError(f'image {rec["image_id"]}: file not found: {path}') from None
  try:
    with Image.open(io.BytesIO(data)) as im:
      im.verify()  # cheap structural check; full decoding happens when reading
    with Image.open(io.BytesIO(data)) as im:
      size = images.displayed_size(im)   # as decoded: EXIF orientation applied
  except Exception as e:  # PIL raises several types for broken files
    raise ValueError(f'image {rec["image_id"]}: cannot decode {path}: {e}') from e
  if size != (rec['width'], rec['height']):
    raise ValueError(f'image {rec["image_id"]}: {path} is {size[0]}x{size[1]} (w x h, as '
                     f'viewed) but the annotation file says {rec["width"]}x{rec["height"]}')
  return data


def encode_record(rec: dict, cat_ids: Sequence[int], ann_file: str) -> dict:
  """A :func:`load_coco` record -> one TFDS example (features of the module docstring)."""
  h, w = rec['height'], rec['width']
  where = f'{ann_file}: image {rec["image_id"]}'
  rles = [to_rle(a['segmentation'], h, w, where) for a in rec['anns']]
  n = len(rec['anns'])
  return dict(
      image=_read_checked(rec), file_name=rec['file'], image_id=int(rec['image_id']),
      height=int(h), width=int(w),
      boxes=np.array([a['box'] for a in rec['anns']], np.float32).reshape(n, 4),
      labels=np.array([a['label'] for a in rec['anns']], np.int32),
      category_id=np.array([cat_ids[a['label']] for a in rec['anns']], np.int32),
      is_crowd=np.array([a['crowd'] for a in rec['anns']], np.bool_),
      masks=dict(counts=[r['counts'].decode('ascii') for r in rles],
                 size=np.array([r['size'] for r in rles], np.int32).reshape(n, 2)))


def decode_example(ex: Mapping) -> dict:
  """A data-source example -> a :func:`load_coco` record (RLE segmentations) + its bytes.

  Returns the record with ``image_bytes``; ``file`` is the original path, for messages.
  """
  name = ex['file_name']
  name = name.decode() if isinstance(name, bytes) else str(name)
  counts, sizes = ex['masks']['counts'], ex['masks']['size']
  anns = []
  for k in range(len(ex['labels'])):
    c = counts[k]
    anns.append(dict(box=tuple(float(v) for v in ex['boxes'][k]), label=int(ex['labels'][k]),
                     crowd=bool(ex['is_crowd'][k]),
                     segmentation=dict(size=[int(v) for v in sizes[k]],
                                       counts=c.encode('ascii') if isinstance(c, str) else c)))
  return dict(file=name, image_id=int(ex['image_id']), height=int(ex['height']),
              width=int(ex['width']), anns=anns, image_bytes=ex['image'])


def _resolve(data_root: str, splits: Union[Sequence[str], SplitFiles],
             cat_ids: Optional[Sequence[int]]) -> Tuple[SplitFiles, Dict[str, list]]:
  """Split names -> files and per-split class ids (see :func:`build`)."""
  info = None
  if storage.exists(storage.join(data_root, 'split.json')):
    info = datasets.load_dataset(data_root)
  if isinstance(splits, Mapping):
    files = {k: (str(a), str(d)) for k, (a, d) in splits.items()}
  else:
    if info is None:
      raise FileNotFoundError(f'{data_root}/split.json not found: pass splits as a mapping '
                              'split -> (annotation json, image folder)')
    files = {s: (info.annotation_file(s), info.image_dir(s)) for s in splits}
  ids = {}
  for split, (ann_file, _) in files.items():
    if cat_ids is not None:
      ids[split] = [int(c) for c in cat_ids]
    elif info is not None:
      names = dict(seen=info.seen, unseen=info.unseen, all=info.names)[
          _SPLIT_CLASSES.get(split, 'all')]
      ids[split] = [int(c) for c in info.cat_ids(names)]
    else:
      ids[split] = _json_category_ids(ann_file)
  return files, ids


def _json_category_ids(ann_file: str) -> list:
  cats = read_json(ann_file, 'annotation file').get('categories', [])
  if not cats:
    raise ValueError(f'{ann_file}: no categories; pass cat_ids')
  return sorted(int(c['id']) for c in cats)


def build(data_root: str, splits: Union[Sequence[str], SplitFiles], out_dir: str,
          cat_ids: Optional[Sequence[int]] = None, overwrite: bool = False) -> ZsiCoco:
  """Writes the TFDS dataset (array_record) for ``splits`` under ``out_dir``.

  Args:
    data_root: a prepared dataset (``split.json``, see datasets.py).
    splits: split names (files from ``data_root``'s layout) or a mapping
      split -> (annotation json, image folder) for any COCO-format data.
    out_dir: TFDS data dir; the dataset lands in ``out_dir/zsi_coco/1.0.0`` (a
      URL: written in a local temporary folder, then uploaded).
    cat_ids: category ids in class order for every split; default: the ZSI
      setting's classes (train/val seen, test_zsi unseen, else all), or the
      json's categories sorted by id when there is no ``split.json``.
    overwrite: rebuild even if ``out_dir`` already holds the dataset.
  Returns:
    the prepared builder; ``builder.info.metadata['splits']`` holds each
    split's cat_ids and skipped-annotation counts.
  """
  files, ids = _resolve(data_root, splits, cat_ids)
  if storage.is_url(out_dir):
    return _build_and_upload(files, ids, out_dir, overwrite)
  return _build_local(files, ids, out_dir, overwrite)


def source_fingerprint(ann_file: str, image_dir: str) -> dict:
  """What a split was built from: its annotation file's SHA-256 and the number
  and total size of the image files it names (one folder listing)."""
  data = storage.read_bytes(ann_file)
  try:
    names = [im['file_name'] for im in json.loads(data).get('images', [])]
  except (ValueError, TypeError, KeyError):
    names = []   # load_coco reports the file's problem
  sizes = storage.file_sizes(image_dir) if storage.isdir(image_dir) else {}
  return dict(annotations_sha256=hashlib.sha256(data).hexdigest(), images=len(names),
              image_bytes=int(sum(sizes.get(n, 0) for n in names)),
              missing_images=sum(n not in sizes for n in names))


def source_changes(built: Mapping, ann_file: str, image_dir: str) -> Optional[str]:
  """How a split's source differs from the one it was built from (None: the
  same, or a dataset built before fingerprints were kept)."""
  old = built.get('fingerprint')
  if not old:
    return None
  new = source_fingerprint(ann_file, image_dir)
  if new['annotations_sha256'] != old['annotations_sha256']:
    return f'{ann_file} changed'
  if (new['image_bytes'], new['missing_images']) != (old['image_bytes'], old['missing_images']):
    return (f'the images in {image_dir} changed ({old["image_bytes"]} bytes when built, '
            f'{new["image_bytes"]} now)')
  return None


def _refuse_stale(builder_or_info, files: SplitFiles, target: str):
  """Raises when an existing dataset was built from another version of ``files``."""
  meta = builder_or_info.info.metadata.get('splits', {})
  changed = [f'{split}: {why}' for split, (ann, images_dir) in files.items() if split in meta
             for why in [source_changes(meta[split], ann, images_dir)] if why]
  if changed:
    raise ValueError(f'{target} was built from another version of its source '
                     f'({"; ".join(changed)}): rebuild it with make_tfds.py --overwrite '
                     '(tfds_coco.build(..., overwrite=True))')


class _ToLog(io.TextIOBase):
  """TFDS's prints ("Downloading and preparing ...", nothing is downloaded) go
  to the log file, not the console."""

  def write(self, text):
    if text.strip():
      logging.getLogger('tensorflow_datasets').info(text.strip())
    return len(text)


def _build_local(files: SplitFiles, ids, out_dir: str, overwrite: bool) -> ZsiCoco:
  target = os.path.join(out_dir, 'zsi_coco', VERSION)
  if overwrite and os.path.exists(target):
    shutil.rmtree(target)
  if os.path.exists(os.path.join(target, 'dataset_info.json')):
    _refuse_stale(tfds.builder_from_directory(target), files, target)
  builder = ZsiCoco(split_files=files, split_cat_ids=ids, data_dir=out_dir,
                    file_format='array_record')
  tfds.disable_progress_bar()   # one bar of our own per split instead of TFDS's nested ones
  with contextlib.redirect_stdout(_ToLog()):
    builder.download_and_prepare(download_dir=os.path.join(out_dir, 'downloads'))
  missing = set(files) - set(builder.info.splits.keys())
  if missing:
    raise ValueError(f'{target} exists without splits {sorted(missing)}: build into a new '
                     'out_dir or pass overwrite=True')
  return builder


def _build_and_upload(files: SplitFiles, ids, url: str, overwrite: bool) -> ZsiCoco:
  target = storage.join(url, 'zsi_coco', VERSION)
  if storage.exists(storage.join(target, 'dataset_info.json')) and not overwrite:
    existing = tfds.builder_from_directory(storage.local_copy(target))
    _refuse_stale(existing, files, target)
    have = set(existing.info.splits.keys())
    if set(files) - have:
      raise ValueError(f'{target} exists without splits {sorted(set(files) - have)}: build '
                       'into a new out_dir or pass overwrite=True')
    return tfds.builder_from_directory(storage.local_copy(target))
  with tempfile.TemporaryDirectory(prefix='zsi_tfds_') as local:
    _build_local(files, ids, local, overwrite=True)
    logger.info('uploading %s to %s', local, url)
    storage.copy_tree(os.path.join(local, 'zsi_coco'), storage.join(url, 'zsi_coco'))
  return open_builder(url)


def open_builder(out_dir: str):
  """The dataset written by :func:`build` (read-only builder: info, metadata, sources)."""
  path = storage.join(out_dir, 'zsi_coco', VERSION)
  if not storage.exists(storage.join(path, 'dataset_info.json')):
    raise FileNotFoundError(f'no TFDS dataset at {path}: run tfds_coco.build first')
  return tfds.builder_from_directory(storage.local_copy(path))


def load_source(out_dir: str, split: str):
  """Random-access data source of one split (``len``, ``source[i]`` -> example dict)."""
  builder = open_builder(out_dir)
  if split not in builder.info.splits:
    raise ValueError(f'split {split!r} not in {out_dir}: has {sorted(builder.info.splits.keys())}')
  return builder.as_data_source(split=split)


def split_metadata(out_dir: str, split: str) -> dict:
  """cat_ids, skipped-annotation counts and source files of one built split."""
  return dict(open_builder(out_dir).info.metadata['splits'][split])
