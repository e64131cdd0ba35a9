"""Files in local folders and cloud buckets alike: every path the project reads
or writes (workdirs, datasets, vector files, outputs) goes through here.

A path is a local path or a URL (``gs://bucket/run``, any scheme fsspec knows).
Buckets are reached through fsspec (gcsfs for ``gs://``), the layer that
``etils.epath`` and so orbax use too, with its listings cache off: other
processes (the other hosts, the next run) change the bucket, and a stale
cached size makes a read wait forever. What differs between local paths and
URLs is kept in this module:

- atomic writes: a local file is written beside its target and renamed; an
  object in a bucket is uploaded in one request, which is atomic by itself;
- appending: object stores cannot append, so appending writers
  (:class:`AppendFile`) keep the file's text and upload it whole at most every
  ``upload_every`` seconds and on ``close``;
- local-only readers (array_record, gensim): :func:`local_copy` mirrors a URL
  into a per-host cache folder once and returns the local path;
- errors: :func:`describe_error` turns a storage failure (no such bucket,
  no credentials, no space, permission, unreachable endpoint) into one line
  naming the path.
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from typing import Iterator, List, Union

import fsspec

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
CACHE_ENV = 'ZSI_CACHE_DIR'


def is_url(path: PathLike) -> bool:
  """True for ``scheme://...`` paths (buckets), False for local paths."""
  return '://' in os.fspath(path)


def absolute(path: PathLike) -> str:
  """A local path made absolute (orbax needs that); a URL unchanged."""
  path = os.fspath(path)
  return path.rstrip('/') if is_url(path) else os.path.abspath(path)


def join(base: PathLike, *parts: str) -> str:
  """``base/part/...`` for local paths and URLs alike."""
  base = os.fspath(base)
  if not is_url(base):
    return os.path.join(base, *parts)
  return '/'.join([base.rstrip('/')] + [p.strip('/') for p in parts if p])


def basename(path: PathLike) -> str:
  path = os.fspath(path)
  return path.rstrip('/').rsplit('/', 1)[-1] if is_url(path) else os.path.basename(path)


def filesystem(url: PathLike):
  """(fsspec filesystem, path inside it) of a URL; no listings cache (see above)."""
  return fsspec.core.url_to_fs(os.fspath(url), use_listings_cache=False)


def exists(path: PathLike) -> bool:
  if not is_url(path):
    return os.path.exists(path)
  fs, inner = filesystem(path)
  return fs.exists(inner)


def isdir(path: PathLike) -> bool:
  if not is_url(path):
    return os.path.isdir(path)
  fs, inner = filesystem(path)
  return fs.isdir(inner)


def makedirs(path: PathLike):
  """Creates a folder and its parents (a no-op in buckets, which have no folders)."""
  if is_url(path):
    fs, inner = filesystem(path)
    fs.makedirs(inner, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def listdir(path: PathLike) -> List[str]:
  """Names of the entries of a folder, sorted."""
  if not is_url(path):
    return sorted(os.listdir(path))
  fs, inner = filesystem(path)
  return sorted(basename(p) for p in fs.ls(inner, detail=False) if p.rstrip('/') != inner.rstrip('/'))


def file_sizes(folder: PathLike) -> dict:
  """{name: bytes} of the files directly in ``folder`` (one listing)."""
  if not is_url(folder):
    with os.scandir(folder) as entries:
      return {e.name: e.stat().st_size for e in entries if e.is_file()}
  fs, inner = filesystem(folder)
  return {basename(e['name']): int(e.get('size') or 0) for e in fs.ls(inner, detail=True)
          if e.get('type') == 'file'}


def size(path: PathLike) -> int:
  if not is_url(path):
    return os.path.getsize(path)
  fs, inner = filesystem(path)
  return int(fs.info(inner)['size'])


def read_bytes(path: PathLike) -> bytes:
  if is_url(path):
    fs, inner = filesystem(path)
    return fs.cat_file(inner)          # one request for the whole object
  with open(path, 'rb') as f:
    return f.read()


def read_text(path: PathLike) -> str:
  return read_bytes(path).decode('utf-8')


def write_bytes(path: PathLike, data: bytes):
  """Writes ``data`` to ``path`` atomically: readers see the old file or the new one, whole."""
  path = os.fspath(path)
  if is_url(path):
    fs, inner = filesystem(path)
    fs.pipe_file(inner, data)            # one upload: the object appears whole or not at all
    return
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f'{path}.tmp{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_text(path: PathLike, text: str):
  write_bytes(path, text.encode('utf-8'))


def remove(path: PathLike):
  """Deletes a file; a missing one is fine."""
  try:
    if is_url(path):
      fs, inner = filesystem(path)
      fs.rm_file(inner)
    else:
      os.remove(path)
  except FileNotFoundError:
    pass


def rename(src: PathLike, dst: PathLike):
  """Moves a file or folder (in buckets: copied object by object, then deleted)."""
  if is_url(src):
    fs, inner = filesystem(src)
    fs.mv(inner, filesystem(dst)[1], recursive=True)
  else:
    os.replace(src, dst)


def walk_files(path: PathLike) -> Iterator[str]:
  """Paths of every file under a folder, relative to it (sorted)."""
  path = os.fspath(path)
  if not is_url(path):
    out = [os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path)
           for f in files]
  else:
    fs, inner = filesystem(path)
    inner = inner.rstrip('/')
    out = [p[len(inner) + 1:] for p in fs.find(inner)]
  return iter(sorted(out))


def copy_tree(src: PathLike, dst: PathLike):
  """Copies every file under folder ``src`` to folder ``dst`` (local or URL either side)."""
  for rel in walk_files(src):
    data = read_bytes(join(src, rel))
    if not is_url(dst):
      os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
    write_bytes(join(dst, rel), data)


# ----------------------------------------------------------------- checks
PROBE_TIMEOUT_ENV = 'ZSI_STORAGE_TIMEOUT'


def probe_timeout() -> float:
  """Seconds a storage check waits for an answer (``$ZSI_STORAGE_TIMEOUT``, default 120):
  gcsfs retries an unreachable endpoint with back-off for about a minute."""
  return float(os.environ.get(PROBE_TIMEOUT_ENV) or 120)


def check_writable(folder: PathLike, what: str = 'folder'):
  """Creates ``folder`` and writes and deletes a probe file in it, so a misspelt
  bucket, missing credentials or a read-only path fail now, in one line
  naming the folder, rather than after compiling or training."""
  probe = join(folder, f'.write_probe.{socket.gethostname()}.{os.getpid()}')

  def attempt():
    makedirs(folder)
    write_bytes(probe, b'')
    remove(probe)
  try:
    _within(probe_timeout(), attempt) if is_url(folder) else attempt()
  except Exception as e:  # noqa: BLE001 - every backend raises its own types
    raise OSError(f'{what} {folder}: cannot write: {describe_error(e)}') from e


def _within(seconds: float, fn):
  """Runs ``fn`` in a daemon thread; TimeoutError if it has not finished in ``seconds``."""
  outcome = {}

  def target():
    try:
      outcome['value'] = fn()
    except BaseException as e:  # noqa: BLE001 - handed to the caller
      outcome['error'] = e
  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    raise TimeoutError(f'no answer within {seconds:g} s (timed out; ${PROBE_TIMEOUT_ENV} '
                       'sets the wait)')
  if 'error' in outcome:
    raise outcome['error']
  return outcome.get('value')


def describe_error(error: BaseException) -> str:
  """One line for a storage failure, with the cause a user can act on first."""
  text = ' '.join(str(error).split())
  low = text.lower()
  if isinstance(error, OSError) and error.errno == errno.ENOSPC or 'no space left' in low:
    return 'no space left on the device'
  if isinstance(error, PermissionError) or error.__class__.__name__ == 'PermissionError':
    return f'permission denied ({text[:200]})'
  if isinstance(error, OSError) and error.errno == errno.EROFS:
    return 'read-only file system'
  if isinstance(error, OSError) and error.errno == errno.EFBIG or 'file too large' in low:
    return 'file too large (the file-size limit, ulimit -f)'
  if 'credentials' in low or '401' in low or 'unauthorized' in low or 'anonymous caller' in low:
    return f'no credentials for it, or they are refused ({text[:200]}); on a cloud VM check its ' \
           'service account, elsewhere run gcloud auth application-default login'
  if 'bucket' in low and ('not found' in low or 'does not exist' in low or '404' in low) or \
     isinstance(error, FileNotFoundError) and '/b/' in low:
    return 'no such bucket (misspelt, or not created yet)'
  if any(s in low for s in ('cannot connect', 'connection refused', 'name or service',
                            'timed out', 'timeout', 'temporary failure in name resolution')):
    return f'the storage service cannot be reached ({text[:200]})'
  return text[:300] or type(error).__name__


# ------------------------------------------------------------- appending
class AppendFile:
  """A text file that grows by lines, in a folder or a bucket.

  Local files are appended and flushed per line. In a bucket (no appends)
  the text is kept here and uploaded whole at most every ``upload_every``
  seconds and on :meth:`flush` / :meth:`close`; existing text is read first,
  so a resumed run continues the file.
  """

  def __init__(self, path: PathLike, upload_every: float = 30.0):
    self.path = os.fspath(path)
    self.remote = is_url(self.path)
    self.upload_every = upload_every
    if self.remote:
      self._text = io.StringIO()
      if exists(self.path):
        self._text.write(read_text(self.path))
      self._dirty, self._last = False, time.monotonic()
    else:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      self._file = open(self.path, 'a')

  def write(self, text: str):
    if not self.remote:
      self._file.write(text)
      self._file.flush()
      return
    self._text.write(text)
    self._dirty = True
    if time.monotonic() - self._last >= self.upload_every:
      self.flush()

  def flush(self):
    if not self.remote:
      self._file.flush()
    elif self._dirty:
      write_text(self.path, self._text.getvalue())
      self._dirty, self._last = False, time.monotonic()

  def close(self):
    self.flush()
    if not self.remote:
      self._file.close()


# Loggers of the storage clients: an upload may log through them, so a log
# file in a bucket must not take their records (logging would wait on itself).
STORAGE_CLIENT_LOGGERS = ('gcsfs', 'fsspec', 'google', 'urllib3', 'aiohttp')


class UploadingLogHandler(logging.FileHandler):
  """A log file in a bucket: written to a local temporary file, which a
  background thread uploads every ``upload_every`` seconds when it changed,
  and :meth:`close` uploads a last time. The storage clients' own records
  are left out (they would be logged while uploading)."""

  def __init__(self, url: str, upload_every: float = 30.0):
    self.url = url
    fd, local = tempfile.mkstemp(prefix='zsi_jax_log_', suffix='.log')
    os.close(fd)
    if exists(url):  # a resumed run continues the log
      with open(local, 'wb') as f:
        f.write(read_bytes(url))
    super().__init__(local, mode='a')
    self.addFilter(lambda r: r.name.split('.')[0] not in STORAGE_CLIENT_LOGGERS)
    self._changed, self._done = threading.Event(), threading.Event()
    self._uploader = threading.Thread(target=self._upload_every, args=(upload_every,),
                                      name='log-upload', daemon=True)
    self._uploader.start()

  def emit(self, record):
    super().emit(record)
    self._changed.set()

  def _upload_every(self, seconds: float):
    while not self._done.wait(seconds):
      if self._changed.is_set():
        self._changed.clear()
        self.upload()

  def upload(self):
    try:  # each record is flushed as it is written: no lock needed to read the file
      write_bytes(self.url, read_bytes(self.baseFilename))
    except Exception as e:  # noqa: BLE001 - a log upload must never stop the run
      logger.debug('log upload to %s failed: %s', self.url, e)

  def close(self):
    if not self._done.is_set():
      self._done.set()
      self._uploader.join()
      self.upload()
      super().close()
      if os.path.exists(self.baseFilename):
        os.remove(self.baseFilename)
    else:
      super().close()


# ------------------------------------------------------ local mirrors
def cache_dir() -> str:
  """This host's cache of local copies of bucket folders (``$ZSI_CACHE_DIR`` or
  ``~/.cache/zsi_jax``)."""
  return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser('~'), '.cache', 'zsi_jax')


def local_copy(url: PathLike) -> str:
  """A local path holding the file or folder at ``url`` (a local path is returned as is).

  For readers that open files through the OS only (array_record, gensim).
  The copy lives under :func:`cache_dir`, keyed by the URL; it is reused when
  every file is there with the bucket's size, else made anew. A copy is
  written into a temporary folder and renamed into place, so processes on
  one host that copy at the same time never see half a copy.
  """
  url = os.fspath(url)
  if not is_url(url):
    return url
  key = hashlib.sha256(url.encode()).hexdigest()[:16]
  target = os.path.join(cache_dir(), 'mirror', f'{key}_{basename(url)}')
  if isdir(url):
    sizes = {rel: size(join(url, rel)) for rel in walk_files(url)}
    if os.path.isdir(target) and all(
        os.path.exists(os.path.join(target, r)) and os.path.getsize(os.path.join(target, r)) == n
        for r, n in sizes.items()):
      return target
    logger.info('copying %s (%d files, %.1f MB) to %s', url, len(sizes),
                sum(sizes.values()) / 1e6, target)
    tmp = tempfile.mkdtemp(prefix='.incoming_', dir=_ensure(os.path.dirname(target)))
    copy_tree(url, tmp)
  else:
    if os.path.isfile(target) and os.path.getsize(target) == size(url):
      return target
    fd, tmp = tempfile.mkstemp(prefix='.incoming_', dir=_ensure(os.path.dirname(target)))
    with os.fdopen(fd, 'wb') as f:
      f.write(read_bytes(url))
  if os.path.isdir(target):
    shutil.rmtree(target, ignore_errors=True)
  try:
    os.replace(tmp, target)
  except OSError:  # another process put its complete copy there first
    shutil.rmtree(tmp, ignore_errors=True)
  return target


def _ensure(folder: str) -> str:
  os.makedirs(folder, exist_ok=True)
  return folder
