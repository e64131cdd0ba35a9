"""Trains a ZSI model.

python train.py --config configs/shapes.py --workdir runs/shapes [--config.key=value ...]
Resumes from the latest checkpoint in --workdir if there is one.
"""
import logging

from absl import app, flags
from ml_collections import config_flags

from zsi_jax.data import datasets
from zsi_jax.data.input_pipeline import Loader, load_coco
from zsi_jax.training import loop

config_flags.DEFINE_config_file('config', None, 'experiment config file', lock_config=True)
flags.DEFINE_string('workdir', None, 'where checkpoints and logs go')
flags.DEFINE_bool('distributed', False, 'call jax.distributed.initialize() (multi-host)')
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def main(_):
  import jax
  if FLAGS.distributed:
    jax.distributed.initialize()
  logging.getLogger().setLevel(logging.INFO)
  config = FLAGS.config
  info = datasets.load_dataset(config.data.root, config.data.vectors)
  records, counts = load_coco(info.annotation_file('train'), info.image_dir('train'),
                              info.cat_ids(info.seen))
  logging.info('train: %d images; skipped annotations: %s', len(records), counts)
  d = config.data
  loader = Loader(records, d.batch_size, d.image_size, d.scale, d.max_instances, d.mask_gt_size,
                  train=True, seed=config.seed, num_threads=max(d.num_workers, 2))
  data = dict(class_vectors=info.vectors_of(info.seen), background=info.background,
              image_size=tuple(d.image_size))
  loop.train(config, FLAGS.workdir, data, loader.train_iterator, loader.steps_per_epoch,
             total_steps=config.get('total_steps') or None)


if __name__ == '__main__':
  app.run(main)
