"""Bad input loses no finished work and gets one clear line (README, "Failure behaviour").

A trained tiny workdir (tests/fixtures/workdir_0804213) and a tiny generated
ZSI-Shapes dataset, broken in the ways a user breaks them.
"""
import io
import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from zsi_jax import checkpoint as ckpt_lib
from zsi_jax.data import shapes
from zsi_jax.evaluation import runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'workdir_0804213')
ENV = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
ENV.pop('ZSI_TRACEBACK', None)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('shapes'))
  shapes.generate(root, shapes.ShapesConfig(image_size=64, num_train=4, num_val=2, num_test=4,
                                            min_radius=8, max_radius=14, vector_dim=16),
                  log=lambda *_: None)
  return root


@pytest.fixture
def workdir(tmp_path):
  path = str(tmp_path / 'run')
  shutil.copytree(FIXTURE, path)
  return path


def _run(args):
  return subprocess.run([sys.executable] + args, cwd=ROOT, env=ENV, capture_output=True,
                        text=True, timeout=600)


def _one_line_error(result, *fragments):
  """Exit status 1, the error on one line naming ``fragments``, no traceback."""
  assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-3000:]
  for fragment in fragments:
    assert fragment in errors[0], errors[0]
  assert 'Traceback' not in result.stderr


def _copy_with_newer_step(workdir, step=4):
  """A second checkpoint (a copy of step 2) at ``step``; returns its folder."""
  checkpoints = ckpt_lib.checkpoint_dir(workdir)
  newer = os.path.join(checkpoints, str(step))
  shutil.copytree(os.path.join(checkpoints, '2'), newer)
  return newer


def _truncate_data_files(folder):
  for base, _, files in os.walk(os.path.join(folder, 'default')):
    if os.path.basename(base) == 'd':
      for name in files:
        with open(os.path.join(base, name), 'r+b') as f:
          f.truncate(10)


# ---------------------------------------------------------------- evaluation
def test_eval_checks_the_ground_truth_before_the_model_runs(workdir, data, tmp_path,
                                                            monkeypatch):
  broken = str(tmp_path / 'data')
  shutil.copytree(data, broken)
  ann = os.path.join(broken, 'annotations', 'test_zsi.json')
  with open(ann) as f:
    gt = json.load(f)
  del gt['categories']
  with open(ann, 'w') as f:
    json.dump(gt, f)

  def model_must_not_run(*args, **kwargs):
    raise AssertionError('the model ran before the ground truth was checked')
  monkeypatch.setattr(runner, 'split_loader', model_must_not_run)
  with pytest.raises(ValueError, match=r"test_zsi.json: no 'categories' list"):
    runner.evaluate(workdir, 'zsi', data_root=broken, log=lambda *_: None)


def test_eval_writes_the_detections_before_scoring(workdir, data, monkeypatch):
  def scoring_fails(*args, **kwargs):
    raise KeyError('area')
  monkeypatch.setattr(runner.protocol, 'zsi_metrics', scoring_fails)
  with pytest.raises(runner.ScoringError, match='the detections are in') as e:
    runner.evaluate(workdir, 'zsi', data_root=data, log=lambda *_: None)
  results = os.path.join(workdir, 'eval', 'zsi_results.json')
  assert results in str(e.value)
  with open(results) as f:
    detections = json.load(f)
  assert isinstance(detections, list) and detections and 'segmentation' in detections[0]


def test_eval_of_a_checkpoint_that_does_not_exist(workdir, data):
  r = _run(['eval.py', '--workdir', workdir, '--checkpoint', '777', '--data_root', data,
            '--split', 'zsi'])
  _one_line_error(r, 'no checkpoint 777', 'available: 2')


# ---------------------------------------------------------------- checkpoints
@pytest.mark.parametrize('damage', ['truncated data', 'lost metadata'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(workdir, damage, caplog):
  newer = _copy_with_newer_step(workdir)
  if damage == 'truncated data':
    _truncate_data_files(newer)
  else:
    os.remove(os.path.join(newer, 'default', '_METADATA'))
  with caplog.at_level(logging.WARNING):
    variables, step = ckpt_lib.restore_variables(workdir)
  assert step == 2 and 'params' in variables
  assert 'checkpoint 4' in caplog.text and 'falling back to step 2' in caplog.text
  assert os.path.isdir(newer)                   # evaluation never moves or deletes one
  with pytest.raises(ckpt_lib.CheckpointError, match='checkpoint 4 .* cannot be read'):
    ckpt_lib.restore_variables(workdir, step=4)


def test_every_checkpoint_damaged_is_an_error_naming_them(workdir):
  _truncate_data_files(os.path.join(ckpt_lib.checkpoint_dir(workdir), '2'))
  with pytest.raises(ckpt_lib.CheckpointError, match=r'every checkpoint .* is damaged \(2\)'):
    ckpt_lib.restore_variables(workdir)


# ---------------------------------------------------------------- prediction
def _png_bytes(array):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format='PNG')
  return buf.getvalue()


def test_predict_skips_unreadable_images_and_writes_the_rest(workdir, data, tmp_path):
  folder = tmp_path / 'inputs'
  folder.mkdir()
  images = sorted(os.listdir(os.path.join(data, 'images')))[:2]
  for name in images:
    shutil.copy(os.path.join(data, 'images', name), folder / name)
  (folder / 'a_broken.png').write_bytes(b'\x89PNG truncated')
  grey16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
  (folder / 'z_grey16.png').write_bytes(_png_bytes(grey16))
  out = tmp_path / 'out'
  # The workdir's config points at a dataset that is not here: --data_root;
  # --max_classes above the dataset's 48.
  r = _run(['predict.py', '--workdir', workdir, '--data_root', data, '--input', str(folder),
            '--classes', 'unseen', '--max_classes', '64', '--out', str(out)])
  _one_line_error(r, 'skipped 1 image(s)', 'a_broken.png', 'cannot decode')
  with open(out / 'images.json') as f:
    written = [os.path.basename(im['file_name']) for im in json.load(f)]
  assert written == images + ['z_grey16.png']
  with open(out / 'results.json') as f:
    assert isinstance(json.load(f), list)
  assert sorted(p.name for p in out.glob('*.png')) == sorted(
      os.path.splitext(n)[0] + '.png' for n in written)


def test_class_vectors_with_nan_are_refused(workdir, data):
  from zsi_jax.inference import Predictor
  p = Predictor.from_checkpoint(workdir, data_root=data)
  vectors = p.info.vectors[:3].copy()
  vectors[1, 5] = np.nan
  with pytest.raises(ValueError, match=r'class vectors \[1\] .* contain NaN'):
    p.predict(np.zeros((64, 64, 3), np.uint8), class_vectors=vectors)


def test_predictor_without_its_dataset_names_the_flag(workdir):
  from zsi_jax.inference import Predictor
  with pytest.raises(FileNotFoundError, match='--data_root'):
    Predictor.from_checkpoint(workdir)


def test_eval_scores_every_split_at_one_checkpoint(workdir, data, monkeypatch):
  # Training writes checkpoint 4 while eval.py --split zsi,gzsi runs on step 2.
  restored = []
  original = ckpt_lib.restore_variables

  def restore_then_train_on(*args, **kwargs):
    out = original(*args, **kwargs)
    restored.append(out[1])
    if not os.path.exists(os.path.join(ckpt_lib.checkpoint_dir(workdir), '4')):
      _copy_with_newer_step(workdir, 4)
    return out
  monkeypatch.setattr(ckpt_lib, 'restore_variables', restore_then_train_on)
  metrics = runner.evaluate_splits(workdir, ['zsi', 'gzsi'], data_root=data,
                                   log=lambda *_: None)
  assert restored == [2]
  assert metrics['zsi']['step'] == metrics['gzsi']['step'] == 2


def test_word_vectors_of_another_dimension_name_the_file_and_both(workdir, data, tmp_path):
  from zsi_jax.inference import Predictor
  path = tmp_path / 'glove5.txt'
  path.write_text('2 5\nzebra 1 0 0 0 0\ncrossing 0 1 0 0 0\n')
  p = Predictor.from_checkpoint(workdir, data_root=data, word_vectors=str(path))
  with pytest.raises(ValueError, match=r'glove5.txt: 5-dimensional word vectors, but the model '
                                       r'compares 16-dimensional ones'):
    p.class_vectors(['red star', 'zebra crossing'])


def test_data_prep_scripts_report_one_line_and_take_both_flag_spellings(tmp_path):
  r = _run(['data_prep/make_coco_splits.py', '--coco_root', str(tmp_path / 'no_coco'),
            '--split', '65_15'])
  _one_line_error(r, 'instances_train2014.json', 'not found')
  r = _run(['data_prep/make_shapes.py', '--num_train', 'many'])
  _one_line_error(r, '--num_train', 'many')
  r = _run(['data_prep/make_word_vectors.py', '--classes', '65_15'])
  _one_line_error(r, '--vectors', '--out')
  out = str(tmp_path / 'shapes')
  r = _run(['data_prep/make_shapes.py', '--num-train', '2', '--num_val', '1', '--num-test', '1',
            '--size', '32', '--out', out])
  assert r.returncode == 0, r.stderr[-2000:]
  with open(os.path.join(out, 'annotations', 'train.json')) as f:
    assert len(json.load(f)['images']) == 2
