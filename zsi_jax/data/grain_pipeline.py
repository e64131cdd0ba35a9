"""Grain pipeline over a TFDS source (tfds_coco.py) -> the batch dict of docs/INTERFACES.md.

A drop-in for :class:`input_pipeline.Loader`: the same examples
(:func:`input_pipeline.make_example`) in the same order, so either can feed
``loop.train`` and a run may even switch between them when it resumes.

Order is a pure function of (seed, step): global step ``s`` holds positions
``s*B .. s*B+B-1`` of an endless stream of seeded per-epoch permutations,
and shard ``i`` of ``n`` (one per process) takes slice ``i`` of every global
batch (:class:`input_pipeline.BatchPlan`, shared with the threaded loader).
Batches are whole grain elements, so worker processes each build whole
batches and the output does not depend on ``worker_count``.

  source = tfds_coco.load_source(out_dir, 'train')
  loader = GrainLoader(source, batch_size=16, image_size=(1344, 1344), scale=(1333, 800),
                       max_instances=100, mask_size=28, train=True, worker_count=4)
  for batch in loader.train_iterator(start_step): ...

Scripts that use ``worker_count > 0`` need an ``if __name__ == '__main__':`` guard.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Dict, Iterator, Optional, Sequence

import grain
import numpy as np

from zsi_jax.data import tfds_coco
from zsi_jax.data.input_pipeline import (BatchPlan, DroppedInstances, blank_example, make_example,
                                         read_image, stack)

# Long enough to never run out (2**62 examples); grain datasets are lazy.
_ENDLESS = 2 ** 62


def _exit_with_trainer(worker_index: int, worker_count: int):
  """Grain worker start-up: exit within a second of the training process's
  death (SIGKILL, out of memory), rather than linger as an orphan."""
  del worker_index, worker_count
  trainer = os.getppid()

  def watch():
    while os.getppid() == trainer:
      time.sleep(1.0)
    os._exit(0)
  threading.Thread(target=watch, name='exit-with-trainer', daemon=True).start()


class _Positions(grain.transforms.Map):
  """Example number ``e`` of this shard -> (record index, flip); record -1 = padding.

  Train: step ``start_step + e // local``, slot ``e % local`` of the plan.
  Eval: the same slots of one sequential pass.
  """

  def __init__(self, plan: BatchPlan, start_step: int, train: bool):
    self.plan, self.start_step, self.train = plan, start_step, train

  def map(self, e):
    step, slot = divmod(int(e), self.plan.local)
    if self.train:
      return self.plan.train_item(self.start_step + step, slot)
    return self.plan.eval_item(step, slot), False


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
    limit: > 0 reads only the split's first ``limit`` examples.
  """

  def __init__(self, source, batch_size: int, image_size: Sequence[int], scale: Sequence[int],
               max_instances: int, mask_size: int, train: bool, seed: int = 0,
               shard_options: Optional[grain.sharding.ShardOptions] = None,
               worker_count: int = 0, num_threads: int = 2, prefetch: int = 2,
               limit: int = 0):
    if shard_options is None:
      import jax
      shard_options = grain.sharding.ShardOptions(shard_index=jax.process_index(),
                                                  shard_count=jax.process_count())
    self.source = source
    num = min(len(source), limit) if limit else len(source)
    self.plan = BatchPlan(num, batch_size, shard_options.shard_index, shard_options.shard_count,
                          seed)
    self.kw = dict(image_size=tuple(image_size), scale=tuple(scale),
                   max_instances=max_instances, mask_size=mask_size)
    self.train = train
    self.worker_count, self.num_threads, self.prefetch = worker_count, num_threads, prefetch
    self.dropped = DroppedInstances(max_instances)

  @property
  def steps_per_epoch(self) -> int:
    return self.plan.steps_per_epoch

  def describe(self):
    return dict(pipeline='grain', **self.plan.describe())

  def image_ids(self):
    """COCO image ids of the examples read, in order."""
    return [int(self.source[i]['image_id']) for i in range(self.plan.num_records)]

  def dataset(self, start_step: int = 0, train: Optional[bool] = None) -> grain.IterDataset:
    """The grain pipeline: training from ``start_step`` (endless) or one eval pass."""
    train = self.train if train is None else train
    num = _ENDLESS if train else self.steps_per_epoch * self.plan.local
    ds = (grain.MapDataset.range(num)
          .map(_Positions(self.plan, start_step if train else 0, train))
          .map(_Example(self.source, self.kw))
          # Batching before the iterator makes a batch one element: threads and
          # workers then split whole batches and never reorder their contents.
          .batch(self.plan.local, batch_fn=stack))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(self.num_threads, 1),
                                              prefetch_buffer_size=max(self.prefetch, 1)))
    if self.worker_count > 0:
      from absl import flags
      if not flags.FLAGS.is_parsed():
        # Grain's worker pool reads its absl flags; outside absl.app (tests,
        # notebooks, plain scripts) they keep their defaults.
        flags.FLAGS.mark_as_parsed()
      it = it.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.worker_count, per_worker_buffer_size=max(self.prefetch, 1)),
          worker_init_fn=_exit_with_trainer)
    return it

  def _iterate(self, ds) -> Iterator[Dict[str, np.ndarray]]:
    it = iter(ds)
    try:
      for batch in it:
        # Copied out of the worker processes' shared memory at once, so it is
        # released while the run goes on, not left to interpreter exit.
        yield self.dropped({k: np.array(v) for k, v in batch.items()})
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
    pos = _Positions(self.plan, step, True)
    example = _Example(self.source, self.kw)
    return stack([example.map(pos.map(e)) for e in range(self.plan.local)])


def from_tfds(out_dir: str, split: str, **kwargs) -> GrainLoader:
  """:class:`GrainLoader` over split ``split`` of the dataset :func:`tfds_coco.build` wrote."""
  return GrainLoader(tfds_coco.load_source(out_dir, split), **kwargs)
