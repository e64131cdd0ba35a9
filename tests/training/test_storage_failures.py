"""A disk that fills up during training: one line naming the folder, the cause
and what was kept, not a traceback per array."""
import os
import subprocess
import sys

import pytest

from tests.scripts import ROOT, SCRIPT_ENV


@pytest.fixture
def small_disk(tmp_path):
  """A 300 KiB file system (tmpfs; needs root), or None where it cannot be mounted."""
  mount = tmp_path / 'disk'
  mount.mkdir()
  r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=300k', 'tmpfs', str(mount)],
                     capture_output=True)
  if r.returncode:
    yield None
    return
  try:
    yield str(mount)
  finally:
    subprocess.run(['umount', str(mount)], capture_output=True)


def _train(workdir, data, limit_bytes=None):
  pre = None
  if limit_bytes:   # no mount here: the process's file-size limit fails the writes instead
    def pre():
      import resource
      import signal
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
      resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
  return subprocess.run(
      [sys.executable, 'train.py', '--config', 'tests/tiny_config.py', '--workdir', workdir,
       f'--config.data.root={data}', '--config.total_steps=3', '--config.checkpoint_every=3'],
      cwd=ROOT, env=SCRIPT_ENV, capture_output=True, text=True, preexec_fn=pre, timeout=600)


def test_a_full_disk_during_a_checkpoint_is_one_line(trained, small_disk, tmp_path):
  data, _ = trained
  if small_disk:
    r = _train(os.path.join(small_disk, 'w'), data)
    cause = 'no space left on the device'
  else:
    r = _train(str(tmp_path / 'w'), data, limit_bytes=200_000)
    cause = 'file too large'
  assert r.returncode == 1
  lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith('train:')
           and 'compiling the train step' not in l and 'train: ' not in l]
  assert len(lines) <= 4, r.stderr[-5000:]
  error = [l for l in lines if l.startswith('error:')]
  assert len(error) == 1 and 'checkpoint 3 could not be written to' in error[0]
  assert cause in error[0] and 'no checkpoint was kept' in error[0]
