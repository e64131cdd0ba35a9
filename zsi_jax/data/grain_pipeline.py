"""Grain pipeline over a TFDS source (tfds_coco.py) -> the batch dict of docs/INTERFACES.md.

A drop-in for :class:`input_pipeline.Loader`: the same examples
(:func:`input_pipeline.make_example`) in the same order, so either can feed
``loop.train`` and a run may even switch between them when it resumes.

Order is a pure function of (seed, step): global step ``s`` holds positions
``s*B .. s*B+B-1`` of an endless stream of seeded per-epoch permutations
(:func:`input_pipeline.train_order`, which also draws each position's flip),
and shard ``i`` of ``n`` (one per process) takes slice ``i`` of every global
batch. Batches are whole grain elements, so worker processes each build whole
batches and the output does not depend on ``worker_count``.

  source = tfds_coco.load_source(out_dir, 'train')
  loader = GrainLoader(source, batch_size=16, image_size=(1344, 1344), scale=(1333, 800),
                       max_instances=100, mask_size=28, train=True, worker_count=4)
  for batch in loader.train_iterator(start_step): ...

Scripts that use ``worker_count > 0`` need an ``if __name__ == '__main__':`` guard.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator, Optional, Sequence, Tuple

import grain
import numpy as np

from zsi_jax.data import tfds_coco
from zsi_jax.data.input_pipeline import _stack, make_example, read_image, train_order

# Long enough to never run out (2**62 examples); grain datasets are lazy.
_ENDLESS = 2 ** 62


def blank_example(image_size: Tuple[int, int], max_instances: int,
                  mask_size: int) -> Dict[str, np.ndarray]:
  """The padding example of eval batches: all zeros, image_id and classes -1."""
  g = max_instances
  return dict(image=np.zeros(tuple(image_size) + (3,), np.float32),
              gt_boxes=np.zeros((g, 4), np.float32), gt_classes=np.full((g,), -1, np.int32),
              gt_crowd=np.zeros((g,), bool), gt_masks=np.zeros((g, mask_size, mask_size), np.uint8),
              gt_valid=np.zeros((g,), bool), image_id=np.int64(-1),
              orig_hw=np.zeros((2,), np.int32), input_hw=np.zeros((2,), np.int32),
              scale=np.float32(0), flipped=np.bool_(False), num_dropped=np.int32(0))


class _Positions(grain.transforms.Map):
  """Example number ``e`` of this shard -> (record index, flip); record -1 = padding.

  Train: step ``start + e // local``, slot ``e % local`` of this shard's slice.
  Eval: the same slicing of one sequential pass over the ``n`` records.
  """

  def __init__(self, n, batch_size, local, shard_index, seed, start_step, train):
    self.n, self.batch_size, self.local = n, batch_size, local
    self.shard_index, self.seed, self.start_step, self.train = (
        shard_index, seed, start_step, train)

  def map(self, e):
    step, slot = divmod(int(e), self.local)
    p = (self.start_step + step) * self.batch_size + self.shard_index * self.local + slot
    if self.train:
      return train_order(p, self.n, self.seed)
    return (p if p < self.n else -1), False


class _Example(grain.transforms.Map):
  """(record index, flip) -> fixed-shape example; decodes the stored bytes."""

  def __init__(self, source, kw):
    self.source, self.kw = source, kw

  def map(self, item):
    index, flip = item
    if index < 0:
      return blank_example(self.kw['image_size'], self.kw['max_instances'], self.kw['mask_size'])
    rec = tfds_coco.decode_example(self.source[index])
    image = read_image(rec.pop('image_bytes'), rec['image_id'], rec['file'])
    return make_example(rec, flip=flip, image=image, **self.kw)


class GrainLoader:
  """Batches of one TFDS split; the contract of :class:`input_pipeline.Loader`.

  Args:
    source: random-access source of tfds_coco examples (:func:`tfds_coco.load_source`).
    batch_size: GLOBAL batch size; this shard yields its slice.
    image_size, scale, max_instances, mask_size: see the config.
    train: shuffle (seeded per epoch) and flip; else sequential, one pass,
      last batch padded with empty images (image_id -1).
    seed: data order seed.
    shard_options: ``grain.sharding.ShardOptions``; default one shard per
      process (``jax.process_index()`` of ``jax.process_count()``).
    worker_count: grain worker processes (0: decode in this process).
    num_threads: threads that build batches in each process.
    prefetch: batches buffered ahead, per thread pool and per worker.
  """

  def __init__(self, source, batch_size: int, image_size: Sequence[int], scale: Sequence[int],
               max_instances: int, mask_size: int, train: bool, seed: int = 0,
               shard_options: Optional[grain.sharding.ShardOptions] = None,
               worker_count: int = 0, num_threads: int = 2, prefetch: int = 2):
    if len(source) == 0:
      raise ValueError('the dataset has no images')
    if shard_options is None:
      import jax
      shard_options = grain.sharding.ShardOptions(shard_index=jax.process_index(),
                                                  shard_count=jax.process_count())
    self.source = source
    self.batch_size = batch_size
    self.kw = dict(image_size=tuple(image_size), scale=tuple(scale),
                   max_instances=max_instances, mask_size=mask_size)
    self.train, self.seed = train, seed
    self.pi, self.pc = shard_options.shard_index, shard_options.shard_count
    if batch_size % self.pc:
      raise ValueError(f'batch size {batch_size} is not divisible by {self.pc} shards')
    self.local = batch_size // self.pc
    self.worker_count, self.num_threads, self.prefetch = worker_count, num_threads, prefetch
    self.dropped = 0

  @property
  def steps_per_epoch(self) -> int:
    return -(-len(self.source) // self.batch_size)

  def dataset(self, start_step: int = 0, train: Optional[bool] = None) -> grain.IterDataset:
    """The grain pipeline: training from ``start_step`` (endless) or one eval pass."""
    train = self.train if train is None else train
    num = _ENDLESS if train else self.steps_per_epoch * self.local
    ds = (grain.MapDataset.range(num)
          .map(_Positions(len(self.source), self.batch_size, self.local, self.pi, self.seed,
                          start_step if train else 0, train))
          .map(_Example(self.source, self.kw))
          # Batching before the iterator makes a batch one element: threads and
          # workers then split whole batches and never reorder their contents.
          .batch(self.local, batch_fn=_stack))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(self.num_threads, 1),
                                              prefetch_buffer_size=max(self.prefetch, 1)))
    if self.worker_count > 0:
      from absl import flags
      if not flags.FLAGS.is_parsed():
        # Grain's worker pool reads its absl flags; outside absl.app (tests,
        # notebooks, plain scripts) they keep their defaults.
        flags.FLAGS.mark_as_parsed()
      it = it.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.worker_count, per_worker_buffer_size=max(self.prefetch, 1)))
    return it

  def _count(self, batch):
    d = int(batch['num_dropped'].sum())
    if d:
      self.dropped += d
      logging.warning('%d instances beyond max_instances=%d were cut from this batch '
                      '(%d so far)', d, self.kw['max_instances'], self.dropped)

  def _iterate(self, ds) -> Iterator[Dict[str, np.ndarray]]:
    it = iter(ds)
    try:
      for batch in it:
        self._count(batch)
        yield batch
    finally:  # closing the generator stops grain's threads and worker processes
      it.close()

  def train_iterator(self, start_step: int = 0) -> Iterator[Dict[str, np.ndarray]]:
    """This shard's batches of steps ``start_step, start_step + 1, ...``."""
    return self._iterate(self.dataset(start_step, train=True))

  def eval_iterator(self) -> Iterator[Dict[str, np.ndarray]]:
    """One pass in file order; each shard gets its slice of every global batch."""
    return self._iterate(self.dataset(train=False))

  def batch(self, step: int) -> Dict[str, np.ndarray]:
    """This shard's slice of the global batch at ``step`` (training order)."""
    pos = _Positions(len(self.source), self.batch_size, self.local, self.pi, self.seed, step, True)
    example = _Example(self.source, self.kw)
    return _stack([example.map(pos.map(e)) for e in range(self.local)])


def from_tfds(out_dir: str, split: str, **kwargs) -> GrainLoader:
  """:class:`GrainLoader` over split ``split`` of the dataset :func:`tfds_coco.build` wrote."""
  return GrainLoader(tfds_coco.load_source(out_dir, split), **kwargs)
