"""The config's input pipeline: threads and grain give the same batches through
train.py's and eval.py's own data path; grain's mistakes are named."""
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests import tiny_config as tiny
from zsi_jax.data import datasets, shapes, tfds_coco
from zsi_jax.data.loaders import split_loader
from zsi_jax.training import loop

ROOT = __file__.rsplit('/tests/', 1)[0]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  tfds.disable_progress_bar()
  root = str(tmp_path_factory.mktemp('shapes'))
  shapes.generate(root, shapes.ShapesConfig(image_size=64, num_train=10, num_val=2, num_test=3,
                                            min_radius=8, max_radius=14, vector_dim=16),
                  log=lambda *_: None)
  out = str(tmp_path_factory.mktemp('tfds'))
  r = subprocess.run([sys.executable, 'data_prep/make_tfds.py', '--root', root, '--out', out],
                     cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'train: 10 images; skipped annotations' in r.stdout
  return root, out


def _config(root, pipeline, tfds_dir='', **data):
  c = tiny.get_config()
  c.data.root = root
  c.data.batch_size = 4
  c.data.pipeline = pipeline
  c.data.tfds_dir = tfds_dir
  c.data.update(data)
  return c


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize('workers', [0, 2])
def test_grain_and_threads_give_the_same_training_batches(data, workers):
  root, out = data
  info = datasets.load_dataset(root)
  threads, _ = loop.training_data(_config(root, 'threads'), info)
  grain_, _ = loop.training_data(_config(root, 'grain', out, workers=workers), info)
  assert threads.describe() == dict(grain_.describe(), pipeline='threads')
  # From step 1 (a resumed run's position), across the epoch boundary.
  a, b = threads.train_iterator(1), grain_.train_iterator(1)
  for _ in range(4):
    _assert_batches_equal(next(a), next(b))
  b.close()


def test_grain_and_threads_give_the_same_evaluation_batches(data):
  root, out = data
  info = datasets.load_dataset(root)
  ids = info.cat_ids(info.unseen)
  a = split_loader(_config(root, 'threads'), info, 'test_zsi', ids, train=False,
                   single_process=True)
  b = split_loader(_config(root, 'grain', out), info, 'test_zsi', ids, train=False,
                   single_process=True)
  batches = list(zip(a.eval_iterator(), b.eval_iterator()))
  assert len(batches) == a.steps_per_epoch == 1
  for x, y in batches:
    _assert_batches_equal(x, y)
  c = split_loader(_config(root, 'grain', out), info, 'test_zsi', ids, train=False,
                   max_images=2, single_process=True)
  assert c.image_ids() == a.image_ids()[:2]


def test_grain_mistakes_are_named(data, tmp_path):
  root, out = data
  info = datasets.load_dataset(root)
  seen = info.cat_ids(info.seen)
  with pytest.raises(ValueError, match='needs config.data.tfds_dir; build it with'):
    split_loader(_config(root, 'grain'), info, 'train', seen, train=True)
  only_train = str(tmp_path / 't')
  tfds_coco.build(root, ['train'], only_train)
  with pytest.raises(FileNotFoundError,
                     match=r"no split 'val'; rebuild it with .*make_tfds.py") as e:
    split_loader(_config(root, 'grain', only_train), info, 'val', seen, train=False)
  # The hint is a command that runs as printed: it rebuilds the dataset with every split.
  hint = shlex.split(str(e.value).split('rebuild it with ', 1)[1])
  assert hint[0] == 'python' and hint[-1] == '--overwrite'
  # Without --overwrite the existing dataset is kept, and the error says so.
  r = subprocess.run([sys.executable] + hint[1:-1], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 1 and r.stderr.startswith(
      f'error: {only_train} holds a dataset of splits train without val, test_zsi, test_gzsi: '
      'add --overwrite'), r.stderr[-2000:]
  r = subprocess.run([sys.executable] + hint[1:], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  assert tfds_coco.split_metadata(only_train, 'val')['cat_ids'] == seen
  with pytest.raises(ValueError, match="split 'train' was built for category ids"):
    split_loader(_config(root, 'grain', out), info, 'train', seen[::-1], train=True)


def test_a_dataset_built_from_another_version_of_its_source_is_refused(tmp_path):
  root = str(tmp_path / 'shapes')
  make = lambda seed: shapes.generate(root, shapes.ShapesConfig(
      image_size=64, num_train=6, num_val=2, num_test=3, min_radius=8, max_radius=14,
      vector_dim=16, seed=seed), log=lambda *_: None)
  make(0)
  out = str(tmp_path / 'tfds')
  command = [sys.executable, 'data_prep/make_tfds.py', '--root', root, '--out', out]
  r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0 and 'wrote' in r.stdout, r.stderr[-2000:]
  # Nothing of TFDS's own wording ("downloaded") or its cursor escapes on the console.
  assert 'download' not in (r.stdout + r.stderr).lower() and '\x1b[A' not in r.stderr
  r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0 and 'was already built from this source' in r.stdout
  info = datasets.load_dataset(root)
  seen = info.cat_ids(info.seen)
  split_loader(_config(root, 'grain', out), info, 'train', seen, train=True)
  make(1)   # the source regenerated: other images, other annotations
  r = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 1 and r.stderr.startswith(
      f'error: {out}/zsi_coco/1.0.0 was built from another version of its source (train: '
      f'{root}/annotations/train.json changed'), r.stderr[-2000:]
  assert '--overwrite' in r.stderr.splitlines()[0]
  with pytest.raises(ValueError, match=r"split 'train' was built from another version of .*"
                                       r"--overwrite"):
    split_loader(_config(root, 'grain', out), datasets.load_dataset(root), 'train', seen,
                 train=True)
  r = subprocess.run(command + ['--overwrite'], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  split_loader(_config(root, 'grain', out), datasets.load_dataset(root), 'train', seen,
               train=True)


def test_both_pipelines_are_batch_loaders(data):
  from zsi_jax.data.loaders import BatchLoader
  root, out = data
  info = datasets.load_dataset(root)
  for config in (_config(root, 'threads'), _config(root, 'grain', out)):
    loader = split_loader(config, info, 'train', info.cat_ids(info.seen), train=True)
    assert isinstance(loader, BatchLoader), type(loader)
