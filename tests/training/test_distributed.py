"""Training at scale, on CPU stand-ins: 4 simulated devices equal 1 device for the
same global batch; two processes (jax.distributed on 127.0.0.1) train together,
each reading its own shard, and write one checkpoint; config mistakes fail
before compiling. (A SIGKILLed run resuming bit for bit: test_bucket_workdir.py
with the threaded loader, and the pod rehearsal with grain.)"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from zsi_jax.data import shapes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(**extra):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  env.pop('XLA_FLAGS', None)
  env.update(extra)
  return env


def _run(args, env=None, timeout=600):
  r = subprocess.run([sys.executable] + args, cwd=ROOT, env=env or _env(), capture_output=True,
                     text=True, timeout=timeout)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  return r


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('shapes'))
  shapes.generate(root, shapes.ShapesConfig(image_size=64, num_train=8, num_val=2, num_test=2,
                                            min_radius=8, max_radius=14, vector_dim=16),
                  log=lambda *_: None)
  return root


@pytest.fixture(scope='module')
def tfds_dir(data_root, tmp_path_factory):
  """The same dataset as TFDS array_record, for data.pipeline='grain'."""
  out = str(tmp_path_factory.mktemp('tfds'))
  _run(['data_prep/make_tfds.py', '--root', data_root, '--out', out, '--splits', 'train'])
  return out


def _grain(tfds_dir, workers=2):
  return ['--config.data.pipeline=grain', f'--config.data.tfds_dir={tfds_dir}',
          f'--config.data.workers={workers}']


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_four_devices_match_one_device(data_root, tmp_path):
  one, four = str(tmp_path / 'one'), str(tmp_path / 'four')
  # The two runs are independent processes (nothing on disk in common but the
  # read-only data): start both, then wait for both. Each spends most of its
  # time in XLA's single-threaded compiler, so on two cores they overlap
  # instead of queueing; what each computes, and the comparison, is unchanged.
  procs = [subprocess.Popen([sys.executable, 'tests/training/mesh_run.py', data_root, w, '2'],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
           for w, env in ((one, _env()),
                          (four, _env(XLA_FLAGS='--xla_force_host_platform_device_count=4')))]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, out[-3000:] + err[-3000:]
  assert 'devices 1' in outs[0][0]
  assert 'devices 4' in outs[1][0]
  m1, m4 = _metrics(one), _metrics(four)
  assert [m['step'] for m in m1] == [m['step'] for m in m4] == [1, 2]
  for a, b in zip(m1, m4):
    for k in ('total', 'rpn_cls', 'det_cls', 'mask_bce', 'grad_norm'):
      np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
  p1, p4 = np.load(os.path.join(one, 'params.npz')), np.load(os.path.join(four, 'params.npz'))
  assert sorted(p1.files) == sorted(p4.files)
  for k in p1.files:
    np.testing.assert_allclose(p1[k], p4[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _train_cmd(data_root, workdir, epochs, *extra):
  # 8 images, batch 2: 4 steps per epoch, a checkpoint every 4 steps. The
  # schedule depends on steps_per_epoch only, so runs of any length share it.
  return ['train.py', '--config', 'tests/tiny_config.py', '--workdir', workdir,
          f'--config.data.root={data_root}', f'--config.num_epochs={epochs}',
          '--config.checkpoint_every=4', '--config.keep_checkpoints=10'] + list(extra)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_on_localhost_train_and_checkpoint(data_root, tfds_dir, tmp_path):
  # Under grain (worker processes), each process reads its own shard: the
  # two halves of every global batch hold different images, together the
  # batch of the order (seed, step).
  workdir = str(tmp_path / 'multi')
  port = _free_port()
  ids = [str(tmp_path / f'ids{i}.json') for i in range(2)]
  cmd = _train_cmd(data_root, workdir, 1, '--config.total_steps=3', '--config.checkpoint_every=3',
                   '--config.data.batch_size=4', *_grain(tfds_dir, workers=1))
  procs = [subprocess.Popen(
      [sys.executable, 'tests/training/hooked_run.py', f'--record_ids={ids[i]}'] + cmd[1:] +
      ['--distributed', f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
       f'--process_id={i}'], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3']
  m = _metrics(workdir)
  assert [r['step'] for r in m] == [1, 2, 3]  # written once, by process 0
  assert all(np.isfinite(r['total']) for r in m)
  seen = []
  for path in ids:
    with open(path) as f:
      seen.append(json.load(f))
  from zsi_jax.data import datasets
  from zsi_jax.data.input_pipeline import BatchPlan, load_coco
  info = datasets.load_dataset(data_root)
  records, _ = load_coco(info.annotation_file('train'), info.image_dir('train'),
                         info.cat_ids(info.seen))
  plan = BatchPlan(len(records), 4, 0, 1, seed=0)
  for step in (1, 2, 3):
    a, b = seen[0][str(step)], seen[1][str(step)]
    assert len(a) == len(b) == 2 and not set(a) & set(b), (step, a, b)
    order = [records[plan.train_item(step - 1, slot)[0]]['image_id'] for slot in range(4)]
    assert a + b == order


@pytest.mark.parametrize('override,message', [
    ('--config.optim.lerning_rate=0.1', 'Did you mean "learning_rate"'),
    ('--config.model.test.scoring=projcted', 'choose one of direct, projected'),
    ('--config.optim.learning_rate=-0.1', 'config.optim.learning_rate=-0.1: must be > 0'),
    ('--config.total_steps=-1', 'config.total_steps=-1: must be >= 0'),
    ('--config.data.batch_size=3', 'not divisible'),
    ('--config.data.max_classes=10', 'raise max_classes'),
    ('--config.data.vectors=missing.txt', 'missing.txt'),
])
def test_config_errors_fail_before_compiling(data_root, tmp_path, override, message):
  # Flags that do not exist in the config file fail in ml_collections itself;
  # the rest are checked by zsi_jax before data loading or compilation. Each
  # is one line naming the key, without a traceback.
  args = _train_cmd(data_root, str(tmp_path / 'w'), 1, override)
  env = _env(XLA_FLAGS='--xla_force_host_platform_device_count=2')
  r = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 1
  errors = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], r.stderr[-2000:]
  assert 'Traceback' not in r.stderr
  assert 'step/s' not in r.stderr and 's/step' not in r.stderr  # no step ran
  # With ZSI_TRACEBACK=1 the traceback is there for debugging.
  if override.startswith('--config.optim.learning_rate'):
    r = subprocess.run([sys.executable] + args, cwd=ROOT, env=dict(env, ZSI_TRACEBACK='1'),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'Traceback' in r.stderr
