"""Trains a ZSI model.

python train.py --config configs/shapes.py --workdir runs/shapes [--config.key=value ...]
Resumes from the newest good checkpoint in --workdir if there is one. The
workdir may be a bucket URL (gs://BUCKET/run). The full log goes to
WORKDIR/train.log; mistakes in the input are one line on the console
(ZSI_TRACEBACK=1 shows the traceback). On SIGTERM or SIGINT (preemption) the
run saves a checkpoint of the step in flight and exits with 128 + the
signal's number; the same command resumes it.
"""
import logging

from absl import app, flags
from ml_collections import config_flags

from zsi_jax import cli, config_check, storage
from zsi_jax.data import datasets
from zsi_jax.training import loop, workdir_lock

logger = logging.getLogger('zsi_jax.train')

config_flags.DEFINE_config_file('config', None, 'experiment config file', lock_config=True)
flags.DEFINE_string('workdir', None, 'where checkpoints and logs go (a folder or gs://...)')
cli.define_distributed_flags()
flags.mark_flags_as_required(['config', 'workdir'])
FLAGS = flags.FLAGS


def main(_):
  cli.setup_logging()
  cli.initialize_distributed()
  import jax
  # A misspelt bucket, missing credentials or a read-only path: one line, now.
  storage.check_writable(FLAGS.workdir, 'workdir')
  with workdir_lock.hold(FLAGS.workdir):   # before anything is written there
    if jax.process_index() == 0:
      cli.log_to_file(storage.join(FLAGS.workdir, 'train.log'))
    state = run(FLAGS.config, FLAGS.workdir)
  if state is not None and jax.process_index() == 0:
    from zsi_jax import checkpoint
    step, w = int(state.step), FLAGS.workdir
    print(f'trained to step {step}; checkpoint {step} in {checkpoint.checkpoint_dir(w)}\n'
          f'evaluate with: python eval.py --workdir {w}\n'
          f'segment with:  python predict.py --workdir {w} --input IMAGE --classes unseen')


def run(config, workdir, hooks=()):
  """Trains ``config`` in ``workdir`` (or resumes it); ``hooks``: see ``loop.train``."""
  # Config mistakes fail here, before any data is read or anything compiled.
  config_check.validate(config)
  info = datasets.load_dataset(config.data.root, config.data.vectors)
  import jax
  if jax.process_index() == 0:  # what inference needs of the dataset travels with the workdir
    datasets.write_class_space(workdir, info)
  loader, classes = loop.training_data(config, info)
  return loop.train(config, workdir, classes, loader.train_iterator, loader.steps_per_epoch,
                    total_steps=config.total_steps or None,
                    eval_fn=make_eval_fn(config, info) if config.eval_every else None,
                    hooks=hooks, data_order=loader.describe())


def make_eval_fn(config, info):
  """Periodic evaluation: seen classes on the first ``eval_images`` held-out images
  (the 'val' split), scored with the paper's protocol; logged as eval/* scalars.
  Every process takes part (each detects its share); process 0 scores."""
  from zsi_jax.evaluation import runner
  ann = info.annotation_file(runner.SETTINGS['seen'])
  if not storage.exists(ann):  # fail now, not hours into training
    raise FileNotFoundError(f'config.eval_every > 0 needs a held-out split of seen classes: '
                            f'{ann} not found (ZSI-Shapes writes one; for COCO, set eval_every=0 '
                            'or add annotations/val.json)')

  def eval_fn(state, step):
    variables = {'params': state.params, **state.model_state}
    m = runner.evaluate_variables(config, variables, info, 'seen', step,
                                  max_images=config.eval_images,
                                  log=lambda *_: None, progress=False)
    if m is None:  # not process 0
      return {}
    return {f'eval/seen_{kind}_{key}': float(m[kind][key]) for kind in ('box', 'mask')
            for key in ('recall@100_iou0.5', 'map@0.5')}
  return eval_fn


if __name__ == '__main__':
  app.run(cli.main(main, errors=(loop.NonFiniteLossError,)), flags_parser=cli.parse_flags)
