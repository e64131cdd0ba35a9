"""COCO-format data -> fixed-shape batches (the batch dict of docs/INTERFACES.md).

Order is a pure function of (seed, step): the global batch of step ``s`` holds
positions ``s*B .. s*B+B-1`` of an endless stream of seeded per-epoch
permutations, and each process takes its own contiguous slice of it. A run
resumed at step ``s`` therefore sees exactly the batches it would have seen.
Decoding runs on a thread pool.
"""
from __future__ import annotations

import concurrent.futures
import functools
import logging
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from zsi_jax import storage
from zsi_jax.data import images
from zsi_jax.jsonio import read_json

logger = logging.getLogger(__name__)

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def load_coco(ann_file: str, image_dir: str, cat_ids: Sequence[int]) -> Tuple[List[dict], dict]:
  """Reads a COCO annotation file into per-image records.

  Args:
    ann_file: COCO instances json.
    image_dir: folder of the images.
    cat_ids: the dataset category ids in class order (label k = cat_ids[k]).
  Returns:
    (records, counts): records hold file, image_id, height, width and
    ``anns`` (box xyxy, label, crowd, segmentation); counts report what was
    skipped and why.
  """
  data = read_json(ann_file, 'annotation file')
  for key in ('images', 'annotations'):
    if key not in data:
      raise ValueError(f'{ann_file}: missing top-level key {key!r}')
  label_of = {int(c): k for k, c in enumerate(cat_ids)}
  counts = dict(other_category=0, degenerate_box=0)
  by_image = {}
  for im in data['images']:
    for key in ('id', 'file_name', 'height', 'width'):
      if key not in im:
        raise ValueError(f'{ann_file}: image entry {im.get("id", "?")} lacks {key!r}')
    by_image[im['id']] = dict(file=storage.join(image_dir, im['file_name']), image_id=im['id'],
                              height=im['height'], width=im['width'], anns=[])
  for a in data['annotations']:
    aid = a.get('id', '?')
    for key in ('image_id', 'category_id', 'bbox'):
      if key not in a:
        raise ValueError(f'{ann_file}: annotation {aid} lacks {key!r}')
    if a['image_id'] not in by_image:
      raise ValueError(f'{ann_file}: annotation {aid} refers to unknown image {a["image_id"]}')
    if a['category_id'] not in label_of:
      counts['other_category'] += 1
      continue
    rec = by_image[a['image_id']]
    x, y, w, h = a['bbox']
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + w, rec['width']), min(y + h, rec['height'])
    if x2 - x1 < 1 or y2 - y1 < 1:
      counts['degenerate_box'] += 1  # zero-area or outside the image: skipped, counted
      continue
    rec['anns'].append(dict(box=(x1, y1, x2, y2), label=label_of[a['category_id']],
                            crowd=bool(a.get('iscrowd', 0)), segmentation=a.get('segmentation')))
  return list(by_image.values()), counts


def decode_mask(seg, h: int, w: int, where: str) -> np.ndarray:
  """COCO segmentation (polygons, RLE or compressed RLE) -> [h, w] uint8."""
  return mask_utils.decode(to_rle(seg, h, w, where))


def to_rle(seg, h: int, w: int, where: str) -> dict:
  """COCO segmentation (polygons, RLE or compressed RLE) -> compressed RLE (bytes counts)."""
  if seg is None:
    raise ValueError(f'{where}: no segmentation')
  if isinstance(seg, list):
    polys = [p for p in seg if len(p) >= 6]
    if not polys:
      raise ValueError(f'{where}: degenerate polygon (fewer than 3 points)')
    rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
  elif isinstance(seg.get('counts'), list):
    rle = mask_utils.frPyObjects(seg, h, w)
  else:
    rle = dict(seg)
    if isinstance(rle['counts'], str):
      rle['counts'] = rle['counts'].encode('ascii')
  return rle


def resize_scale(h: int, w: int, scale: Tuple[int, int]) -> float:
  """Keep-ratio factor so the short side <= scale[0] and the long side <= scale[1]."""
  short_max, long_max = min(scale), max(scale)
  return min(short_max / min(h, w), long_max / max(h, w))


def crop_mask(mask: np.ndarray, box, size: int) -> np.ndarray:
  """Crops ``mask`` to ``box`` (xyxy, original pixels) and resizes to size x size (uint8)."""
  x1, y1, x2, y2 = box
  c0, r0 = int(np.floor(x1)), int(np.floor(y1))
  c1, r1 = max(int(np.ceil(x2)), c0 + 1), max(int(np.ceil(y2)), r0 + 1)
  crop = mask[r0:r1, c0:c1].astype(np.float32)
  img = Image.fromarray(crop).resize((size, size), Image.BILINEAR)
  return (np.asarray(img) >= 0.5).astype(np.uint8)


def read_image(source, image_id, name: str) -> np.ndarray:
  """Decodes an image file (path) or its encoded bytes -> [H, W, 3] uint8 RGB.

  Any mode Pillow reads is converted (``images.to_rgb8``); errors name the
  image id and ``name`` (the file).
  """
  return images.decode(source, f'image {image_id} ({name})')


def prepare_image(img: np.ndarray, image_size: Tuple[int, int], scale: Tuple[int, int],
                  flip: bool = False):
  """[H, W, 3] uint8 -> keep-ratio resized, (flipped,) normalised, padded image.

  The resize follows ``scale`` (see ``resize_scale``), shrunk further to fit
  ``image_size`` when those limits exceed it.

  Returns:
    (canvas [image_size..., 3] float32, (nh, nw) size of the image inside the
    padding, scale factor s with input = original * s).
  """
  h, w = img.shape[:2]
  s = resize_scale(h, w, scale)
  if round(h * s) > image_size[0] or round(w * s) > image_size[1]:
    # Limits that exceed the canvas: shrink to fit, keeping the ratio (never crop).
    s = min(image_size[0] / h, image_size[1] / w)
  nh, nw = min(int(round(h * s)), image_size[0]), min(int(round(w * s)), image_size[1])
  resized = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR), np.float32)
  if flip:
    resized = resized[:, ::-1]
  canvas = np.zeros(tuple(image_size) + (3,), np.float32)
  canvas[:nh, :nw] = (resized - MEAN) / STD
  return canvas, (nh, nw), s


def make_example(rec: dict, image_size: Tuple[int, int], scale: Tuple[int, int],
                 max_instances: int, mask_size: int, flip: bool,
                 image: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
  """One record -> fixed-shape arrays (see the batch table in docs/INTERFACES.md).

  ``image`` ([H, W, 3] uint8), when given, is used instead of reading ``rec['file']``.
  """
  img = read_image(rec['file'], rec['image_id'], rec['file']) if image is None else image
  h, w = img.shape[:2]
  canvas, (nh, nw), s = prepare_image(img, image_size, scale, flip)

  g = max_instances
  boxes = np.zeros((g, 4), np.float32)
  classes = np.full((g,), -1, np.int32)
  crowd = np.zeros((g,), bool)
  valid = np.zeros((g,), bool)
  masks = np.zeros((g, mask_size, mask_size), np.uint8)
  anns = rec['anns']
  # Keep the largest instances when there are more than G; the rest are counted.
  if len(anns) > g:
    anns = sorted(anns, key=lambda a: -(a['box'][2] - a['box'][0]) * (a['box'][3] - a['box'][1]))
  for i, a in enumerate(anns[:g]):
    x1, y1, x2, y2 = a['box']
    full = decode_mask(a['segmentation'], h, w, f'image {rec["image_id"]}')
    m = crop_mask(full, a['box'], mask_size)
    b = np.array([x1, y1, x2, y2], np.float32) * s
    if flip:
      b = np.array([nw - b[2], b[1], nw - b[0], b[3]], np.float32)
      m = m[:, ::-1]
    boxes[i], classes[i], crowd[i], valid[i], masks[i] = b, a['label'], a['crowd'], True, m
  return dict(image=canvas, gt_boxes=boxes, gt_classes=classes, gt_crowd=crowd, gt_masks=masks,
              gt_valid=valid, image_id=np.int64(rec['image_id']),
              orig_hw=np.array([h, w], np.int32), input_hw=np.array([nh, nw], np.int32),
              scale=np.float32(s), flipped=np.bool_(flip),
              num_dropped=np.int32(max(len(rec['anns']) - g, 0)))


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  # Cached: every position of an epoch needs the same permutation of n records.
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  perm.flags.writeable = False
  return perm


def train_order(position: int, n: int, seed: int) -> Tuple[int, bool]:
  """(record index, flip) at ``position`` of the endless stream of seeded epochs."""
  epoch, i = divmod(position, n)
  return (int(_epoch_permutation(seed, epoch, n)[i]),
          bool(np.random.default_rng([seed, epoch, i]).random() < 0.5))


class BatchPlan:
  """Which record fills each slot of this process's slice of each global batch.

  The global batch of step ``s`` holds positions ``s*B .. s*B+B-1``; process
  (shard) ``i`` of ``n`` takes the ``B/n`` positions starting at ``i*B/n``.
  Training positions index an endless stream of seeded epochs (with a
  seeded flip each); evaluation positions index the records in order, one
  pass, the last batch padded with record -1.

  Args:
    num_records: records of the split.
    batch_size: GLOBAL batch size.
    shard_index, shard_count: this process and the number of processes.
    seed: data order seed.
  """

  def __init__(self, num_records: int, batch_size: int, shard_index: int, shard_count: int,
               seed: int = 0):
    if num_records == 0:
      raise ValueError('the dataset has no images')
    if batch_size % shard_count:
      raise ValueError(f'batch size {batch_size} is not divisible by {shard_count} processes')
    self.num_records, self.batch_size, self.seed = num_records, batch_size, seed
    self.shard_index, self.shard_count = shard_index, shard_count
    self.local = batch_size // shard_count

  @property
  def steps_per_epoch(self) -> int:
    return -(-self.num_records // self.batch_size)

  def describe(self) -> Dict[str, int]:
    """What the order is a function of, besides the step (saved with checkpoints)."""
    return dict(num_records=self.num_records, batch_size=self.batch_size,
                shard_count=self.shard_count, seed=self.seed)

  def _position(self, step: int, slot: int) -> int:
    return step * self.batch_size + self.shard_index * self.local + slot

  def train_item(self, step: int, slot: int) -> Tuple[int, bool]:
    """(record index, flip) of a slot of step ``step``'s batch."""
    return train_order(self._position(step, slot), self.num_records, self.seed)

  def eval_item(self, step: int, slot: int) -> int:
    """Record index of a slot of evaluation batch ``step``, or -1 for padding."""
    p = self._position(step, slot)
    return p if p < self.num_records else -1


def blank_example(image_size: Tuple[int, int], max_instances: int,
                  mask_size: int) -> Dict[str, np.ndarray]:
  """The padding example of evaluation batches: all zeros, image_id and classes -1."""
  g = max_instances
  return dict(image=np.zeros(tuple(image_size) + (3,), np.float32),
              gt_boxes=np.zeros((g, 4), np.float32), gt_classes=np.full((g,), -1, np.int32),
              gt_crowd=np.zeros((g,), bool), gt_masks=np.zeros((g, mask_size, mask_size), np.uint8),
              gt_valid=np.zeros((g,), bool), image_id=np.int64(-1),
              orig_hw=np.zeros((2,), np.int32), input_hw=np.zeros((2,), np.int32),
              scale=np.float32(0), flipped=np.bool_(False), num_dropped=np.int32(0))


def stack(examples):
  """Examples (dicts of arrays) -> one batch dict."""
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class DroppedInstances:
  """Counts instances beyond ``max_instances`` cut from batches, with a warning each time."""

  def __init__(self, max_instances: int):
    self.max_instances, self.total = max_instances, 0

  def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    cut = int(np.sum(batch['num_dropped']))
    if cut:
      self.total += cut
      logger.warning('%d instances beyond max_instances=%d were cut from this batch '
                     '(%d so far)', cut, self.max_instances, self.total)
    return batch


class Loader:
  """Batches of one COCO split, decoded by a thread pool.

  Args:
    records: from :func:`load_coco`.
    batch_size: GLOBAL batch size; this process yields its slice.
    image_size, scale, max_instances, mask_size: see the config.
    train: shuffle (seeded per epoch) and flip; else sequential, one pass,
      last batch padded with empty images (image_id -1).
    seed: data order seed.
    process_index, process_count: multi-host slice (defaults: jax's).
    num_threads: decoding threads.
  """

  def __init__(self, records, batch_size, image_size, scale, max_instances, mask_size,
               train, seed=0, process_index=None, process_count=None, num_threads=2):
    import jax
    self.records = records
    self.plan = BatchPlan(len(records), batch_size,
                          jax.process_index() if process_index is None else process_index,
                          jax.process_count() if process_count is None else process_count,
                          seed)
    self.kw = dict(image_size=tuple(image_size), scale=tuple(scale),
                   max_instances=max_instances, mask_size=mask_size)
    self.train = train
    self.pool = concurrent.futures.ThreadPoolExecutor(max(num_threads, 1))
    # A separate single thread prefetches the next batch (it waits on self.pool,
    # so it must not occupy one of that pool's workers).
    self.prefetch = concurrent.futures.ThreadPoolExecutor(1)
    self.dropped = DroppedInstances(max_instances)

  @property
  def steps_per_epoch(self):
    return self.plan.steps_per_epoch

  def image_ids(self):
    """COCO image ids of the records read, in order."""
    return [r['image_id'] for r in self.records]

  def describe(self):
    return dict(pipeline='threads', **self.plan.describe())

  def batch(self, step: int) -> Dict[str, np.ndarray]:
    """This process's slice of the global batch at ``step`` (training order)."""
    items = [self.plan.train_item(step, slot) for slot in range(self.plan.local)]
    return self.dropped(stack(list(self.pool.map(
        lambda it: make_example(self.records[it[0]], flip=it[1], **self.kw), items))))

  def train_iterator(self, start_step: int = 0) -> Iterator[Dict[str, np.ndarray]]:
    step = start_step
    nxt = self.prefetch.submit(self.batch, step)
    while True:
      cur = nxt.result()
      step += 1
      nxt = self.prefetch.submit(self.batch, step)
      yield cur

  def eval_iterator(self) -> Iterator[Dict[str, np.ndarray]]:
    """One pass in file order; each process gets its slice of every global batch."""
    def example(index):
      if index < 0:
        return blank_example(self.kw['image_size'], self.kw['max_instances'],
                             self.kw['mask_size'])
      return make_example(self.records[index], flip=False, **self.kw)

    for step in range(self.steps_per_epoch):
      items = [self.plan.eval_item(step, slot) for slot in range(self.plan.local)]
      yield self.dropped(stack(list(self.pool.map(example, items))))
