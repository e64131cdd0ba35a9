"""Training loop: the loss goes down, a resumed run equals an uninterrupted one,
logs and config land in the workdir, non-finite losses stop the run."""
import json
import os

import jax
import numpy as np
import pytest

from tests import tiny_config as tiny
from tests.modeling.test_zsi import make_batch
from zsi_jax import checkpoint as ckpt_lib
from zsi_jax.training.loop import NonFiniteLossError, TrainingClasses, train

D = 16


def _data():
  rng = np.random.default_rng(0)
  vecs = rng.normal(size=(3, D)).astype(np.float32)
  vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
  return TrainingClasses(vecs, vecs.mean(0), (64, 64))


BATCHES = [make_batch(np.random.default_rng(i)) for i in range(3)]


def _iterator(start):
  step = start
  while True:
    yield BATCHES[step % len(BATCHES)]
    step += 1


def _config(**kw):
  c = tiny.get_config()
  c.optim.learning_rate = 0.01
  c.optim.warmup_steps = 2
  c.checkpoint_every = 3
  for k, v in kw.items():
    setattr(c, k, v)
  return c


def test_resume_equals_uninterrupted_and_logs(tmp_path):
  straight = train(_config(), str(tmp_path / 'a'), _data(), _iterator, steps_per_epoch=3,
                   total_steps=6)
  # Interrupted after the checkpoint at step 3, then resumed to step 6.
  train(_config(), str(tmp_path / 'b'), _data(), _iterator, steps_per_epoch=3, total_steps=3)
  resumed = train(_config(), str(tmp_path / 'b'), _data(), _iterator, steps_per_epoch=3,
                  total_steps=6)
  assert int(resumed.step) == 6
  for x, y in zip(jax.tree_util.tree_leaves(straight.params),
                  jax.tree_util.tree_leaves(resumed.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
  logs = [json.loads(l) for l in open(tmp_path / 'a' / 'metrics.jsonl')]
  assert [l['step'] for l in logs] == list(range(1, 7))
  for key in ('rpn_cls', 'rpn_box', 'det_cls', 'det_box', 'det_recon', 'mask_bce',
              'mask_recon', 'learning_rate', 'grad_norm', 'step_time'):
    assert key in logs[0]
  assert os.listdir(tmp_path / 'a' / 'tensorboard')
  assert ckpt_lib.load_config(str(tmp_path / 'a')).model.fpn_channels == 16


def test_loss_decreases_on_a_fixed_batch(tmp_path):
  def same(start):
    while True:
      yield BATCHES[0]
  train(_config(log_every=1), str(tmp_path), _data(), same, steps_per_epoch=100, total_steps=25)
  logs = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  first = np.mean([l['total'] for l in logs[:3]])
  last = np.mean([l['total'] for l in logs[-3:]])
  assert last < 0.7 * first, (first, last)


def test_non_finite_loss_stops_with_the_step_named(tmp_path):
  bad = dict(BATCHES[0])
  bad['image'] = np.full_like(bad['image'], np.nan)

  def it(start):
    step = start
    while True:
      yield BATCHES[0] if step < 2 else bad
      step += 1
  with pytest.raises(NonFiniteLossError, match='step 3'):
    train(_config(checkpoint_every=2), str(tmp_path), _data(), it, steps_per_epoch=10,
          total_steps=5)
  # The last good checkpoint (step 2) is intact.
  assert ckpt_lib.make_manager(str(tmp_path), 2, 3).latest_step() == 2


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path):
  bad = dict(BATCHES[0])
  bad['image'] = np.full_like(bad['image'], np.nan)

  def it(start):
    while True:
      yield bad
  with pytest.raises(NonFiniteLossError, match='no checkpoint has been written yet'):
    train(_config(checkpoint_every=2), str(tmp_path), _data(), it, steps_per_epoch=10,
          total_steps=5)


def test_resume_skips_a_damaged_newest_checkpoint(tmp_path, caplog):
  # Steps 2 and 4 saved; step 4's data files truncated. The resumed run says
  # so, moves step 4 aside (never deleting it or step 2) and trains on from
  # step 2, to the same parameters as a run that was never damaged.
  workdir = str(tmp_path / 'w')
  straight = train(_config(checkpoint_every=2), str(tmp_path / 's'), _data(), _iterator,
                   steps_per_epoch=3, total_steps=6)
  train(_config(checkpoint_every=2), workdir, _data(), _iterator, steps_per_epoch=3,
        total_steps=4)
  step4 = os.path.join(ckpt_lib.checkpoint_dir(workdir), '4')
  for base, _, files in os.walk(step4):
    for name in files:
      if os.path.basename(base) == 'd':
        with open(os.path.join(base, name), 'r+b') as f:
          f.truncate(10)
  with caplog.at_level('WARNING'):
    resumed = train(_config(checkpoint_every=2), workdir, _data(), _iterator, steps_per_epoch=3,
                    total_steps=6)
  assert 'checkpoint 4' in caplog.text and 'falling back to step 2' in caplog.text
  assert os.path.isdir(step4 + '.damaged')
  assert sorted(os.listdir(ckpt_lib.checkpoint_dir(workdir))) == ['2', '4', '4.damaged', '6']
  assert int(resumed.step) == 6
  for x, y in zip(jax.tree_util.tree_leaves(straight.params),
                  jax.tree_util.tree_leaves(resumed.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)
