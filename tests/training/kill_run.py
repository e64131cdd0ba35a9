"""train.py's training run that SIGKILLs itself once the checkpoint of a given
step is on disk: a kill at a known step, without a race (test_distributed.py).

python tests/training/kill_run.py STEP <train.py flags>
"""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from absl import app  # noqa: E402

import train  # noqa: E402


def kill_after_checkpoint(step):
  def hook(done, state, manager):
    if done == step:
      manager.wait_until_finished()
      os.kill(os.getpid(), signal.SIGKILL)
  return hook


if __name__ == '__main__':
  kill_step = int(sys.argv.pop(1))
  app.run(lambda _: train.run(train.FLAGS.config, train.FLAGS.workdir,
                              hooks=[kill_after_checkpoint(kill_step)]))
