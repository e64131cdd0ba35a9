"""train.py's training run with step hooks injected by the tests (test_distributed.py):

python tests/training/hooked_run.py [--kill_at=STEP] [--term_at=STEP] [--record_ids=FILE] <train.py flags>

--kill_at: SIGKILL the process group once the checkpoint of STEP is on disk
(a kill at a known step, without a race; start the run with a session of its
own). --term_at: send this process SIGTERM once STEP is done, as a
preemption notice arriving then (with --distributed, only process
--term_process gets it). --record_ids: write the image ids of this
process's slice of every step's batch to FILE (JSON, {step: [ids]}).
"""
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app, flags  # noqa: E402

import train  # noqa: E402

flags.DEFINE_integer('kill_at', 0, 'SIGKILL after the checkpoint of this step')
flags.DEFINE_integer('term_at', 0, 'send this process SIGTERM after this step')
flags.DEFINE_integer('term_process', 0, 'with --distributed: the process that gets SIGTERM')
flags.DEFINE_string('record_ids', '', 'write each step\'s local image ids here')
FLAGS = flags.FLAGS


def kill_after_checkpoint(step):
  # The whole process group, grain's worker processes included, as a
  # preemption kills the job (start the run in a session of its own).
  def hook(done, state, manager, batch):
    if done == step:
      manager.wait_until_finished()
      os.killpg(os.getpgrp(), signal.SIGKILL)
  return hook


def terminate_after(step):
  def hook(done, state, manager, batch):
    if done == step:
      os.kill(os.getpid(), signal.SIGTERM)
  return hook


def record_image_ids(path):
  seen = {}

  def hook(done, state, manager, batch):
    seen[done] = [int(i) for i in batch['image_id']]
    with open(path, 'w') as f:
      json.dump(seen, f)
  return hook


def main(_):
  import jax

  from zsi_jax import cli
  cli.initialize_distributed()
  hooks = []
  if FLAGS.kill_at:
    hooks.append(kill_after_checkpoint(FLAGS.kill_at))
  if FLAGS.term_at and jax.process_index() == FLAGS.term_process:
    hooks.append(terminate_after(FLAGS.term_at))
  if FLAGS.record_ids:
    hooks.append(record_image_ids(FLAGS.record_ids))
  train.run(FLAGS.config, FLAGS.workdir, hooks=hooks)


if __name__ == '__main__':
  from zsi_jax import cli
  app.run(cli.main(main))
