"""The pod path on one machine, in one process: a workdir and a dataset in a
(loopback-emulated) GCS bucket. A run SIGKILLed after a checkpoint and one
preempted by SIGTERM between checkpoints both resume from the bucket to the
parameters of an uninterrupted run, bit for bit; eval.py, predict.py and the
Predictor read the bucket; nothing is written to the working directory."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from zsi_jax import storage
from zsi_jax.data import shapes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def bucket_run(gcs, tmp_path_factory):
  """Everything the tests below look at: the commands' results, the bucket's
  workdirs and the (meant to stay empty) working directory."""
  tmp = tmp_path_factory.mktemp('bucket_run')
  cwd = tmp / 'cwd'
  cwd.mkdir()
  local_data = str(tmp / 'shapes')
  shapes.generate(local_data, shapes.ShapesConfig(image_size=64, num_train=8, num_val=2,
                                                  num_test=2, min_radius=8, max_radius=14,
                                                  vector_dim=16), log=lambda *_: None)
  bucket = f'gs://{gcs.bucket}'
  data = f'{bucket}/shapes'
  storage.copy_tree(local_data, data)
  env = dict(os.environ, **gcs.env, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
             ZSI_CACHE_DIR=str(tmp / 'cache'), JAX_COMPILATION_CACHE_DIR=str(tmp / 'jax_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  env.pop('XLA_FLAGS', None)

  def cmd(script, workdir, epochs, *extra):
    # 8 images, batch 2: 4 steps per epoch, a checkpoint every 4 steps.
    return [sys.executable, os.path.join(ROOT, script), '--config',
            os.path.join(ROOT, 'tests/tiny_config.py'), '--workdir', workdir,
            f'--config.data.root={data}', f'--config.num_epochs={epochs}',
            '--config.checkpoint_every=4', '--config.keep_checkpoints=10'] + list(extra)

  def run(args, **kw):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          **kw)

  straight, run_dir = f'{bucket}/straight', f'{bucket}/run'
  hooked = 'tests/training/hooked_run.py'
  # The uninterrupted run and the run that SIGKILLs itself once checkpoint 4
  # is in the bucket, side by side (they share the compiled step via the cache).
  procs = [subprocess.Popen(cmd('train.py', straight, 2), cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
           subprocess.Popen(cmd(hooked, run_dir, 1000, '--kill_at=4'), cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)]
  outs = [p.communicate(timeout=600) for p in procs]
  out = dict(straight=(procs[0].returncode, outs[0][1]), killed=(procs[1].returncode, outs[1][1]))
  # Resumed, then preempted: SIGTERM after step 6, between checkpoints 4 and 8.
  r = run(cmd(hooked, run_dir, 2, '--term_at=6'))
  out['preempted'] = (r.returncode, r.stderr)
  out['steps_after_preemption'] = _steps(f'{run_dir}/checkpoints')
  r = run(cmd('train.py', run_dir, 2))
  out['resumed'] = (r.returncode, r.stderr)
  r = run([sys.executable, os.path.join(ROOT, 'eval.py'), '--workdir', run_dir, '--split', 'zsi'])
  out['eval'] = (r.returncode, r.stdout + r.stderr)
  r = run([sys.executable, os.path.join(ROOT, 'predict.py'), '--workdir', run_dir,
           '--dataset_split', 'test_zsi', '--classes', 'unseen', '--out', f'{run_dir}/pictures'])
  out['predict'] = (r.returncode, r.stdout + r.stderr)
  return dict(out=out, straight=straight, run=run_dir, cwd=str(cwd), data=data, env=env)


def _steps(checkpoints):
  return sorted(int(n) for n in storage.listdir(checkpoints) if n.isdigit())


def _params(workdir, step):
  import orbax.checkpoint as ocp
  mngr = ocp.CheckpointManager(f'{workdir}/checkpoints')
  return mngr.restore(step, args=ocp.args.StandardRestore())['params']


def test_sigkill_then_sigterm_then_resume_equals_uninterrupted(bucket_run):
  out = bucket_run['out']
  assert out['straight'][0] == 0, out['straight'][1][-3000:]
  assert out['killed'][0] == -signal.SIGKILL, out['killed'][1][-3000:]
  # The input pipeline's state is saved with every checkpoint and compared on resuming.
  data_state = json.loads(storage.read_text(f'{bucket_run["run"]}/checkpoints/4/data/metadata'))
  assert data_state['next_step'] == 4 and data_state['pipeline'] == 'threads'
  assert data_state['num_records'] == 8 and data_state['batch_size'] == 2
  # The SIGKILLed run left its workdir lock behind; the resumed run took it
  # over at once (same host, no such process) and was preempted after step 6.
  code, err = out['preempted']
  assert 'taking over the workdir lock' in err, err[-3000:]
  assert code == 128 + signal.SIGTERM, err[-3000:]
  lines = [line for line in err.splitlines() if line.startswith('preempted')]
  assert lines == [f'preempted (SIGTERM) at step 6; checkpoint 6 saved in {bucket_run["run"]}'
                   '/checkpoints; run the same command to resume'], err[-3000:]
  assert 'Traceback' not in err
  assert out['steps_after_preemption'] == [4, 6]
  assert out['resumed'][0] == 0, out['resumed'][1][-3000:]
  assert 'resumed from step 6' in out['resumed'][1]
  assert _steps(f'{bucket_run["run"]}/checkpoints') == [4, 6, 8]
  import jax
  a, b = _params(bucket_run['straight'], 8), _params(bucket_run['run'], 8)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Everything the run writes is in the bucket: log, config, metrics, events.
  names = storage.listdir(bucket_run['run'])
  for name in ('config.json', 'metrics.jsonl', 'train.log', 'tensorboard', 'checkpoints'):
    assert name in names, names
  assert 'RUNNING.json' not in names       # released at the end
  steps = [m['step'] for m in map(json.loads,
                                  storage.read_text(f'{bucket_run["run"]}/metrics.jsonl')
                                  .splitlines())]
  assert set(steps) == set(range(1, 9))
  assert storage.listdir(f'{bucket_run["run"]}/tensorboard')


def test_eval_predict_and_predictor_read_the_bucket(bucket_run):
  out, run_dir = bucket_run['out'], bucket_run['run']
  assert out['eval'][0] == 0, out['eval'][1][-3000:]
  metrics = json.loads(storage.read_text(f'{run_dir}/eval/zsi_metrics.json'))
  assert metrics['step'] == 8 and metrics['setting'] == 'zsi' and metrics['images'] == 2
  assert storage.exists(f'{run_dir}/eval/zsi_results.json')
  assert storage.exists(f'{run_dir}/eval/eval.log')
  assert out['predict'][0] == 0, out['predict'][1][-3000:]
  pictures = storage.listdir(f'{run_dir}/pictures')
  assert {'results.json', 'images.json', 'categories.json', 'predict.log'} <= set(pictures)
  assert len([n for n in pictures if n.endswith('.png')]) == 2

  from zsi_jax.inference import Predictor
  p = Predictor.from_checkpoint(run_dir)
  assert p.step == 8
  image = storage.join(bucket_run['data'], 'images',
                       json.loads(storage.read_text(
                           f'{bucket_run["data"]}/annotations/test_zsi.json'))['images'][0]
                       ['file_name'])
  pred = p.predict(image, class_names=p.info.unseen, score_threshold=0.0)
  assert pred['masks'].shape[1:] == (64, 64)
  # Nothing of any of this went to the local working directory.
  assert os.listdir(bucket_run['cwd']) == []


def test_second_run_on_a_held_workdir_fails_naming_the_holder(gcs, tmp_path):
  """A live holder (this test process, heartbeat now) blocks a second train.py."""
  import socket
  import time
  workdir = f'gs://{gcs.bucket}/held'
  storage.write_text(f'{workdir}/RUNNING.json', json.dumps(dict(
      host=socket.gethostname(), pid=os.getpid(), token='x', started=time.time(),
      heartbeat=time.time())))
  data = str(tmp_path / 'shapes')
  shapes.generate(data, shapes.ShapesConfig(image_size=64, num_train=2, num_val=1, num_test=1,
                                            min_radius=8, max_radius=14, vector_dim=16),
                  log=lambda *_: None)
  env = dict(os.environ, **gcs.env, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  r = subprocess.run([sys.executable, 'train.py', '--config', 'tests/tiny_config.py', '--workdir',
                      workdir, f'--config.data.root={data}'], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  errors = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
  assert r.returncode == 1 and len(errors) == 1, r.stderr[-2000:]
  assert f'{workdir} is in use by another training run' in errors[0]
  assert f'pid {os.getpid()}' in errors[0] and socket.gethostname() in errors[0]
  assert storage.listdir(workdir) == ['RUNNING.json']   # nothing else written
  assert 'train:' not in r.stderr                      # no step ran


@pytest.mark.parametrize('case', ['no_bucket', 'unreachable', 'not_writable'])
def test_bad_workdir_is_one_line_naming_it_before_compiling(gcs, tmp_path, case):
  env = dict(os.environ, **gcs.env, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  workdir = {'no_bucket': 'gs://no-such-bucket-zsi/run', 'unreachable': f'gs://{gcs.bucket}/x',
             'not_writable': '/etc/hostname/run'}[case]
  if case == 'unreachable':
    from tools.gcs_emulator import free_port
    env.update(STORAGE_EMULATOR_HOST=f'http://127.0.0.1:{free_port()}', ZSI_STORAGE_TIMEOUT='5')
  r = subprocess.run([sys.executable, 'train.py', '--config', 'tests/tiny_config.py', '--workdir',
                      workdir], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  errors = [line for line in r.stderr.splitlines() if line.startswith('error: ')]
  assert r.returncode == 1 and len(errors) == 1, r.stderr[-2000:]
  assert errors[0].startswith(f'error: workdir {workdir}: cannot write: '), errors[0]
  expected = {'no_bucket': 'no such bucket', 'unreachable': 'cannot be reached',
              'not_writable': 'Not a directory'}[case]
  assert expected in errors[0], errors[0]
  assert 'Traceback' not in r.stderr
