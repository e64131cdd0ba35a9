"""The input pipeline of an experiment config: threads over COCO files, or grain over TFDS.

Both give the same fixed-shape batches in the same order (a pure function of
seed and step, each process reading its own slice), so a run can even switch
between them when it resumes. ``data.pipeline`` chooses:

- 'threads': :class:`input_pipeline.Loader` reads the COCO json and image
  files of ``data.root`` and decodes with ``data.threads`` threads. Simple,
  no preparation; one Python process, so the GIL caps it (docs/DATA.md, "Input
  pipelines").
- 'grain': :class:`grain_pipeline.GrainLoader` reads the TFDS array_record
  dataset in ``data.tfds_dir`` (``python data_prep/make_tfds.py``) and
  decodes in ``data.workers`` worker processes.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterator, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

from zsi_jax import storage
from zsi_jax.data import tfds_coco
from zsi_jax.data.input_pipeline import Loader, load_coco

logger = logging.getLogger(__name__)


@runtime_checkable
class BatchLoader(Protocol):
  """What training and evaluation use of a pipeline; ``Loader`` and
  ``GrainLoader`` both are one (tests/data/test_loaders.py checks it).

  Batches are dicts of fixed-shape NumPy arrays (docs/INTERFACES.md), this
  process's slice of each global batch.
  """
  plan: object   # the step -> records plan (input_pipeline.BatchPlan)

  @property
  def steps_per_epoch(self) -> int: ...

  def describe(self) -> Dict[str, object]:
    """What the order is a function of besides the step (saved with checkpoints)."""

  def image_ids(self) -> Sequence[int]:
    """COCO image ids of the records read, in order."""

  def train_iterator(self, start_step: int = 0) -> Iterator[Dict[str, np.ndarray]]:
    """Endless training batches from ``start_step`` on (shuffled, flipped)."""

  def eval_iterator(self) -> Iterator[Dict[str, np.ndarray]]:
    """One pass in file order, the last batch padded with empty images."""


def split_loader(config, info, split: str, cat_ids: Sequence[int], train: bool,
                 max_images: int = 0, single_process: bool = False,
                 batch_size: Optional[int] = None) -> BatchLoader:
  """The loader of one split of a dataset.

  Args:
    config: the experiment config (``data.*``, ``seed``).
    info: ``datasets.DatasetInfo`` of the dataset (``data.root``).
    split: 'train', 'val', 'test_zsi' or 'test_gzsi'.
    cat_ids: the category ids of the split's classes, in class order.
    train: training order (shuffled, flipped, endless) or one pass in file order.
    max_images: > 0 reads only the split's first ``max_images`` images.
    single_process: this process reads the whole batch, not its slice.
    batch_size: the global batch (default: the config's ``data.batch_size``).
  Returns:
    a ``Loader`` or ``GrainLoader``, both a :class:`BatchLoader`.
  """
  d = config.data
  shape = dict(batch_size=batch_size or d.batch_size, image_size=tuple(d.image_size), scale=tuple(d.scale),
               max_instances=d.max_instances, mask_size=d.mask_gt_size, train=train,
               seed=config.seed)
  if d.pipeline == 'threads':
    records, counts = load_coco(info.annotation_file(split), info.image_dir(split), cat_ids)
    logger.info('%s: %d images; skipped annotations: %s', split, len(records), counts)
    if max_images:
      records = records[:max_images]
    one = dict(process_index=0, process_count=1) if single_process else {}
    return Loader(records, num_threads=d.threads, **one, **shape)
  from zsi_jax.data import grain_pipeline
  source = _tfds_source(d.tfds_dir, split, info, cat_ids)
  shard = {}
  if single_process:
    import grain
    shard = dict(shard_options=grain.sharding.ShardOptions(shard_index=0, shard_count=1))
  return grain_pipeline.GrainLoader(source, worker_count=d.workers, num_threads=d.threads,
                                    limit=max_images, **shard, **shape)


def _tfds_source(tfds_dir: str, split: str, info, cat_ids):
  """The TFDS split, checked to hold the dataset's classes in the same order."""
  if not tfds_dir:
    raise ValueError("config.data.pipeline='grain' needs config.data.tfds_dir; build it with "
                     f'python data_prep/make_tfds.py --root {info.root} --out {info.root}_tfds '
                     f'and add --config.data.tfds_dir={info.root}_tfds')
  try:
    meta = tfds_coco.split_metadata(tfds_dir, split)
  except FileNotFoundError:    # no dataset there yet
    raise FileNotFoundError(f'config.data.tfds_dir={tfds_dir}: no split {split!r}; build it with '
                            f'python data_prep/make_tfds.py --root {info.root} --out {tfds_dir}'
                            ) from None
  except KeyError:             # a dataset built without this split: rebuild it whole
    raise FileNotFoundError(f'config.data.tfds_dir={tfds_dir}: no split {split!r}; rebuild it with '
                            f'python data_prep/make_tfds.py --root {info.root} --out {tfds_dir} '
                            '--overwrite') from None
  if [int(c) for c in meta['cat_ids']] != [int(c) for c in cat_ids]:
    raise ValueError(f'config.data.tfds_dir={tfds_dir}: split {split!r} was built for category '
                     f'ids {meta["cat_ids"]}, the dataset at {info.root} has {list(cat_ids)}; '
                     f'rebuild it with python data_prep/make_tfds.py --root {info.root} '
                     f'--out {tfds_dir} --overwrite')
  ann_file = info.annotation_file(split)
  if storage.exists(ann_file):   # the source is here: the dataset must have been built from it
    changed = tfds_coco.source_changes(meta, ann_file, info.image_dir(split))
    if changed:
      raise ValueError(f'config.data.tfds_dir={tfds_dir}: split {split!r} was built from '
                       f'another version of {info.root} ({changed}); rebuild it with python '
                       f'data_prep/make_tfds.py --root {info.root} --out {tfds_dir} --overwrite')
  logger.info('%s: %d images from %s; skipped annotations: %s', split, meta['images'], tfds_dir,
              meta['skipped'])
  return tfds_coco.load_source(tfds_dir, split)
