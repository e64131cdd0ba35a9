"""One training run per workdir: a lock file naming the run that holds it.

``WORKDIR/RUNNING.json`` holds the holder's host, pid, start time, a random
token and a heartbeat time that a thread of the holder renews every
``heartbeat`` seconds. A second run on the same workdir fails in one line
naming the holder. A lock left by a run that died without releasing it
(SIGKILL, a lost VM) does not block forever: it is stale, and taken over,

- at once, on the holder's own host, when no process has the holder's pid;
- anywhere, once its heartbeat is older than ``stale_after`` seconds.

Taking the lock is an exclusive create where the store has one (a local
file opened with O_EXCL; a GCS object written with if-generation-match 0),
then read back to check the token, so of two runs that start together one
fails. Multi-host runs take it on process 0; the others learn the outcome.
Holding a workdir that this process already holds is a no-op (train.py takes
it before it writes its log; the training loop takes it again).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Optional

from zsi_jax import storage

logger = logging.getLogger(__name__)

LOCK_FILE = 'RUNNING.json'
_HELD = set()          # lock paths this process holds


class WorkdirHeld(OSError):
  """The workdir is held by another run."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:     # exists, owned by someone else
    return True
  return True


class WorkdirLock:
  """Holds ``workdir`` for this run (a context manager; see the module docstring)."""

  def __init__(self, workdir: str, heartbeat: float = 30.0, stale_after: float = 120.0):
    if stale_after <= heartbeat:
      raise ValueError(f'stale_after={stale_after} must exceed heartbeat={heartbeat}')
    self.workdir = workdir
    self.path = storage.join(workdir, LOCK_FILE)
    self.heartbeat, self.stale_after = heartbeat, stale_after
    self.token = uuid.uuid4().hex
    self.record = dict(host=socket.gethostname(), pid=os.getpid(), token=self.token,
                       started=time.time())
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  # ------------------------------------------------------------ state
  def _read(self) -> Optional[dict]:
    try:
      return json.loads(storage.read_text(self.path))
    except FileNotFoundError:
      return None
    except (ValueError, UnicodeDecodeError):
      return {}                 # half-written by a run that died mid-write: stale

  def why_stale(self, holder: dict) -> Optional[str]:
    """Why ``holder``'s lock no longer counts, or None while it does."""
    if not holder or 'heartbeat' not in holder:
      return 'the lock file is unreadable'
    age = time.time() - float(holder['heartbeat'])
    if holder.get('host') == socket.gethostname() and not _pid_alive(int(holder['pid'])):
      return f'no process {holder["pid"]} runs on {holder["host"]}'
    if age > self.stale_after:
      return f'its last heartbeat is {age:.0f} s old (stale after {self.stale_after:g} s)'
    return None

  def describe(self, holder: dict) -> str:
    age = time.time() - float(holder['heartbeat'])
    started = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(holder['started'])))
    return (f'{self.workdir} is in use by another training run (host {holder["host"]}, pid '
            f'{holder["pid"]}, started {started}, last heartbeat {age:.0f} s ago); one run per '
            f'workdir: wait for it to end, or use another --workdir (a lock of a run that '
            f'died is taken over once its heartbeat is {self.stale_after:g} s old, or at once '
            'on its own host)')

  # ------------------------------------------------------------ taking
  def _write(self, exclusive: bool):
    data = json.dumps(dict(self.record, heartbeat=time.time()), indent=1).encode()
    if not exclusive:
      storage.write_bytes(self.path, data)
    elif storage.is_url(self.path):
      _create_object(self.path, data)
    else:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
      with os.fdopen(fd, 'wb') as f:
        f.write(data)

  def acquire(self):
    """Takes the lock or raises :class:`WorkdirHeld` naming the holder."""
    holder = self._read()
    if holder is not None:
      reason = self.why_stale(holder)
      if reason is None:
        raise WorkdirHeld(self.describe(holder))
      logger.warning('taking over the workdir lock of %s: %s',
                     f'host {holder.get("host")}, pid {holder.get("pid")}', reason)
      storage.remove(self.path)
    try:
      self._write(exclusive=True)
    except FileExistsError:
      holder = self._read() or {}
      raise WorkdirHeld(self.describe(holder) if 'heartbeat' in holder
                        else f'{self.workdir} was taken by another run just now') from None
    time.sleep(0.2)              # a store without exclusive create: the last writer wins
    holder = self._read() or {}
    if holder.get('token') != self.token:
      raise WorkdirHeld(self.describe(holder) if 'heartbeat' in holder
                        else f'{self.workdir} was taken by another run just now')
    self._thread = threading.Thread(target=self._beat, name='workdir-lock', daemon=True)
    self._thread.start()
    _HELD.add(self.path)

  def _beat(self):
    while not self._stop.wait(self.heartbeat):
      try:
        holder = self._read() or {}
        if holder.get('token') != self.token:
          logger.error('the workdir lock %s was taken over by %s; this run no longer holds it',
                       self.path, holder.get('host'))
          return
        self._write(exclusive=False)
      except Exception as e:  # noqa: BLE001 - a missed heartbeat must not stop training
        logger.warning('workdir lock heartbeat failed: %s', storage.describe_error(e))

  def release(self):
    """Removes the lock if this run still holds it."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
      _HELD.discard(self.path)
      try:
        if (self._read() or {}).get('token') == self.token:
          storage.remove(self.path)
      except Exception as e:  # noqa: BLE001 - nothing to lose: the lock goes stale
        logger.warning('could not remove the workdir lock %s: %s', self.path,
                       storage.describe_error(e))

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
    return False


def _create_object(url: str, data: bytes):
  """Creates ``url`` only if no object is there (FileExistsError otherwise)."""
  if url.startswith('gs://'):
    fs, inner = storage.filesystem(url)
    try:
      fs.pipe_file(inner, data, mode='create')
    except FileExistsError:
      raise
    except Exception as e:  # noqa: BLE001 - 412 Precondition Failed: it exists
      if '412' in str(e) or 'precondition' in str(e).lower():
        raise FileExistsError(url) from e
      raise
    return
  if storage.exists(url):
    raise FileExistsError(url)
  storage.write_bytes(url, data)


def hold(workdir: str, stale_after: float = 120.0):
  """The workdir held by this run across all its processes.

  Process 0 takes the lock; all processes then learn whether it succeeded, so
  none of them starts training on a held workdir. Returns a context manager.
  """
  import contextlib

  import jax
  lock = WorkdirLock(workdir, heartbeat=min(30.0, stale_after / 4), stale_after=stale_after)
  if lock.path in _HELD:
    return contextlib.nullcontext()
  if jax.process_count() == 1:
    return lock
  return _MultiProcessHold(lock)


class _MultiProcessHold:
  def __init__(self, lock: WorkdirLock):
    self.lock = lock

  def __enter__(self):
    import jax
    import numpy as np
    from jax.experimental import multihost_utils
    error = None
    if jax.process_index() == 0:
      try:
        self.lock.acquire()
      except OSError as e:
        error = e
    ok = multihost_utils.broadcast_one_to_all(np.int32(error is None))
    if error is not None:
      raise error
    if not int(ok):
      raise WorkdirHeld(f'{self.lock.workdir}: process 0 could not take the workdir lock '
                        '(its output says why)')
    _HELD.add(self.lock.path)
    return self

  def __exit__(self, *exc):
    import jax
    if jax.process_index() == 0:
      self.lock.release()
    _HELD.discard(self.lock.path)
    return False
