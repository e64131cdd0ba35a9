"""One run per workdir: the lock names its holder, goes stale when the holder is
provably gone or silent, and of two runs starting together one fails."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from zsi_jax import storage
from zsi_jax.training.workdir_lock import LOCK_FILE, WorkdirHeld, WorkdirLock


def _write_holder(workdir, **fields):
  record = dict(host=socket.gethostname(), pid=os.getpid(), token='other', started=time.time(),
                heartbeat=time.time())
  record.update(fields)
  storage.write_text(storage.join(workdir, LOCK_FILE), json.dumps(record))


def test_live_holder_blocks_and_release_frees(tmp_path):
  workdir = str(tmp_path)
  with WorkdirLock(workdir):
    with pytest.raises(WorkdirHeld, match=rf'{workdir} is in use by another training run \(host '
                                          rf'{socket.gethostname()}, pid {os.getpid()}'):
      WorkdirLock(workdir).acquire()
  assert not os.path.exists(os.path.join(workdir, LOCK_FILE))
  with WorkdirLock(workdir):          # free again
    pass


def test_holder_whose_process_is_gone_is_taken_over_at_once(tmp_path):
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True).stdout.strip()
  _write_holder(str(tmp_path), pid=int(dead))
  with WorkdirLock(str(tmp_path)) as lock:
    assert json.loads((tmp_path / LOCK_FILE).read_text())['token'] == lock.token


def test_silent_holder_on_another_host_goes_stale_after_the_timeout(tmp_path):
  _write_holder(str(tmp_path), host='elsewhere', heartbeat=time.time() - 5)
  with pytest.raises(WorkdirHeld, match='host elsewhere'):
    WorkdirLock(str(tmp_path), heartbeat=1, stale_after=60).acquire()
  with WorkdirLock(str(tmp_path), heartbeat=1, stale_after=4):   # 5 s > 4 s: stale
    pass


def test_heartbeat_keeps_a_live_lock_fresh(tmp_path):
  with WorkdirLock(str(tmp_path), heartbeat=0.3, stale_after=1.0):
    time.sleep(1.5)
    holder = json.loads((tmp_path / LOCK_FILE).read_text())
    assert time.time() - holder['heartbeat'] < 1.0
    with pytest.raises(WorkdirHeld):
      WorkdirLock(str(tmp_path), heartbeat=0.3, stale_after=1.0).acquire()


@pytest.mark.parametrize('where', ['local', 'gcs'])
def test_two_runs_starting_together_one_wins(where, tmp_path, request):
  if where == 'gcs':
    workdir = f'gs://{request.getfixturevalue("gcs").bucket}/lock_race_{time.time_ns()}'
  else:
    workdir = str(tmp_path)
  locks = [WorkdirLock(workdir) for _ in range(2)]
  outcome = [None, None]
  start = threading.Barrier(2)

  def take(i):
    start.wait()
    try:
      locks[i].acquire()
      outcome[i] = 'held'
    except WorkdirHeld:
      outcome[i] = 'refused'
  threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for lock in locks:
    lock.release()
  assert sorted(outcome) == ['held', 'refused']


def test_holding_again_in_the_same_process_is_a_no_op(tmp_path):
  from zsi_jax.training import workdir_lock
  with workdir_lock.hold(str(tmp_path)) as outer:
    token = json.loads((tmp_path / LOCK_FILE).read_text())['token']
    with workdir_lock.hold(str(tmp_path)):          # the training loop inside train.py
      pass
    assert json.loads((tmp_path / LOCK_FILE).read_text())['token'] == token == outer.token
  assert not (tmp_path / LOCK_FILE).exists()
