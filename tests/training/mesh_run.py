"""Trains the tiny config for a few steps on however many devices XLA exposes and
saves the final parameters; test_distributed.py runs it with 1 and 4 CPU devices.

python tests/training/mesh_run.py DATA_ROOT WORKDIR STEPS
"""
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests import tiny_config as tiny  # noqa: E402
from zsi_jax.data import datasets  # noqa: E402
from zsi_jax.training import loop  # noqa: E402


def main(root, workdir, steps):
  jax.config.update('jax_default_matmul_precision', 'highest')
  c = tiny.get_config()
  c.data.root = root
  c.data.batch_size = 4
  # Two mask-RoI buckets, so the mask loss runs as the switch that computes
  # its gradients inside the taken bucket (the default on real configs):
  # that, too, must give the same parameters on 1 and 4 devices.
  c.model.mask_head.roi_buckets = 2
  c.checkpoint_every = 1000
  info = datasets.load_dataset(root)
  loader, classes = loop.training_data(c, info)
  state = loop.train(c, workdir, classes, loader.train_iterator, loader.steps_per_epoch,
                     total_steps=steps)
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
  np.savez(os.path.join(workdir, 'params.npz'),
           **{jax.tree_util.keystr(k): np.asarray(v) for k, v in flat})
  print('devices', jax.device_count())


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
