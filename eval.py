"""Evaluates a trained ZSI model with the paper's protocol.

python eval.py --workdir runs/shapes [--split zsi|gzsi|seen] [--checkpoint STEP] [--scoring direct|projected]
    [--calibration GAMMA] [--calibration_sweep N] [--distributed ...]
Writes workdir/eval/{split}_results.json (COCO results, RLE masks) and
{split}_metrics.json, and prints the table. --calibration_sweep N evaluates
GZSI at N seen-score calibrations gamma in [-1, 1] (the model runs once per
image) and writes workdir/eval/gzsi_calibration.json and .png. With
--distributed (the same flags as train.py, the same command on every host)
each process detects its share of the images and process 0 scores them.
"""
from absl import app, flags

from zsi_jax import cli, storage
from zsi_jax.evaluation.runner import (SETTINGS, ScoringError, calibration_sweep,
                                        evaluate_splits)

flags.DEFINE_string('workdir', None, 'training workdir (holds config.json and checkpoints/)')
flags.DEFINE_list('split', ['zsi', 'gzsi'], 'zsi, gzsi and/or seen')
flags.DEFINE_integer('checkpoint', None, 'step to evaluate (default: latest)')
flags.DEFINE_enum('scoring', None, ['direct', 'projected'], 'unseen scoring (default: config)')
flags.DEFINE_string('data_root', None, 'dataset root (default: the one in the config)')
flags.DEFINE_string('vectors', None, 'class-vector file in the dataset root (default: config)')
flags.DEFINE_float('calibration', None, 'GZSI: lower seen-class scores by this gamma in [-1, 1] '
                   '(calibrated stacking; default: config model.test.seen_calibration)')
flags.DEFINE_integer('calibration_sweep', 0, 'GZSI: evaluate N values of gamma in [-1, 1] and '
                     'write the seen-unseen curve (with --split gzsi)')
flags.DEFINE_integer('batch_per_device', 0, 'images per device and step (default: the '
                     "training's share, config data.batch_size over the devices)")
cli.define_distributed_flags()
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(_):
  unknown = [s for s in FLAGS.split if s not in SETTINGS]
  if unknown:
    raise ValueError(f'--split {",".join(unknown)}: choose from {", ".join(SETTINGS)}')
  if FLAGS.calibration is not None and not -1.0 <= FLAGS.calibration <= 1.0:
    raise ValueError(f'--calibration={FLAGS.calibration}: must be in [-1, 1]')
  if FLAGS.calibration_sweep and FLAGS.split != ['gzsi']:
    raise ValueError('--calibration_sweep is a GZSI measurement: use it with --split gzsi')
  cli.setup_logging()
  cli.initialize_distributed()
  import jax
  if jax.process_index() == 0:
    storage.check_writable(storage.join(FLAGS.workdir, 'eval'), 'evaluation folder')
    cli.log_to_file(storage.join(FLAGS.workdir, 'eval', 'eval.log'))
  if FLAGS.calibration_sweep:
    calibration_sweep(FLAGS.workdir, FLAGS.calibration_sweep, FLAGS.checkpoint, FLAGS.scoring,
                      FLAGS.data_root, FLAGS.vectors, batch_per_device=FLAGS.batch_per_device)
    return
  # One checkpoint for every split, even while training writes newer ones.
  evaluate_splits(FLAGS.workdir, FLAGS.split, FLAGS.checkpoint, FLAGS.scoring, FLAGS.data_root,
                  FLAGS.vectors, FLAGS.calibration, batch_per_device=FLAGS.batch_per_device)


if __name__ == '__main__':
  app.run(cli.main(main, errors=(ScoringError,)), flags_parser=cli.parse_flags)
