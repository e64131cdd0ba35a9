"""Evaluates a trained ZSI model with the paper's protocol.

python eval.py --workdir runs/shapes [--split zsi|gzsi|seen] [--checkpoint STEP] [--scoring direct|projected]
Writes workdir/eval/{split}_results.json (COCO results, RLE masks) and
{split}_metrics.json, and prints the table.
"""
from absl import app, flags

from zsi_jax.evaluation.runner import evaluate

flags.DEFINE_string('workdir', None, 'training workdir (holds config.json and checkpoints/)')
flags.DEFINE_list('split', ['zsi', 'gzsi'], 'zsi, gzsi and/or seen')
flags.DEFINE_integer('checkpoint', None, 'step to evaluate (default: latest)')
flags.DEFINE_enum('scoring', None, ['direct', 'projected'], 'unseen scoring (default: config)')
flags.DEFINE_string('data_root', None, 'dataset root (default: the one in the config)')
flags.DEFINE_string('vectors', None, 'class-vector file in the dataset root (default: config)')
flags.mark_flag_as_required('workdir')
FLAGS = flags.FLAGS


def main(_):
  for s in FLAGS.split:
    evaluate(FLAGS.workdir, s, FLAGS.checkpoint, FLAGS.scoring, FLAGS.data_root, FLAGS.vectors)


if __name__ == '__main__':
  app.run(main)
