"""What the command-line entry points (train.py, eval.py, predict.py) share: errors
as one clear line, a quiet console, a full log file and the multi-host flags.

A mistake in the input (a config key, a file, a checkpoint) is reported as
``error: <what and where>`` and exit status 1; the traceback is kept for
debugging behind ``ZSI_TRACEBACK=1`` or absl's ``--verbosity=1`` (``-v 1``).
A run that stops on purpose (preemption) prints its one line as it is and
exits with its own status (:class:`Interrupted`). The console shows progress
bars, warnings, results and this package's own messages; everything else
logged (orbax, absl, the storage clients) goes to the log file only, which
may be in a bucket.
The compiler's freed memory is handed back after each compilation
(``host.release_heap_after_compiles``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from typing import Callable, Optional

from absl import flags

from zsi_jax import host, storage

# Errors that describe bad input rather than a bug: reported in one line.
USER_ERRORS = (ValueError, OSError, KeyError)
TRACEBACK_ENV = 'ZSI_TRACEBACK'


def traceback_wanted() -> bool:
  if os.environ.get(TRACEBACK_ENV, '') not in ('', '0'):
    return True
  return flags.FLAGS.is_parsed() and flags.FLAGS['verbosity'].value >= 1


def one_line(error: BaseException) -> str:
  """The error's message on one line (a wrapped error unwrapped, KeyError's repr undone)."""
  while len(error.args) == 1 and isinstance(error.args[0], BaseException):
    error = error.args[0]
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  text = ' '.join(text.split())
  return text or type(error).__name__


def fail(error: BaseException):
  print(f'error: {one_line(error)}', file=sys.stderr)
  if not traceback_wanted():
    print(f'(set {TRACEBACK_ENV}=1 for the traceback)', file=sys.stderr)
  sys.exit(1)


def parse_flags(argv):
  """absl's flag parsing with a flag or config-override mistake as one line
  (ml_collections reports a misspelt ``--config.x.y`` as an AttributeError)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError) + USER_ERRORS as e:
    if os.environ.get(TRACEBACK_ENV, '') not in ('', '0'):
      raise
    message = one_line(e)
    if 'Did you mean' in message:        # ml_collections' hint for an unknown key
      message = 'unknown config key; ' + message[message.index('Did you mean'):]
    named = [a.split('=', 1)[0] for a in argv[1:] if a.startswith('--config.')
             and a.split('=', 1)[0].rsplit('.', 1)[-1] in str(e)]
    fail(ValueError(f'{named[0]}: {message}' if named else message))


class ArgumentParser(argparse.ArgumentParser):
  """argparse for the data_prep/ scripts with the flag spelling of the rest
  (``--coco_root``; the hyphenated ``--coco-root`` is kept as an alias), and
  its mistakes as a ValueError, so :func:`main` reports them in one line."""

  def add_argument(self, *names, **kwargs):
    aliases = [n.replace('_', '-') for n in names if n.startswith('--') and '_' in n]
    return super().add_argument(*names, *aliases, **kwargs)

  def error(self, message):
    raise ValueError(f'{self.prog}: {message} (--help lists the flags)')


class Interrupted(Exception):
  """A run that stopped on purpose: its message is printed as is, and the
  process exits with ``status`` (e.g. 128 + the signal's number)."""

  def __init__(self, message: str, status: int):
    super().__init__(message)
    self.status = status


def _quiet_unraisable(info, _default=sys.unraisablehook):
  """TensorStore's callbacks report 'Event loop is closed' (one traceback per
  array) when a checkpoint write fails and orbax gives up; to the log only."""
  if isinstance(info.exc_value, RuntimeError) and str(info.exc_value) == 'Event loop is closed':
    logging.getLogger('orbax').debug('ignored after a failed write: %s', info.exc_value)
    return
  _default(info)


def main(run: Callable, errors=()) -> Callable:
  """Wraps an absl ``main``: input mistakes (and ``errors``) become one line."""
  caught = USER_ERRORS + tuple(errors)

  def wrapped(argv):
    host.release_heap_after_compiles()
    sys.unraisablehook = _quiet_unraisable
    # Left behind by an orbax write that failed; reported by this package instead.
    warnings.filterwarnings('ignore', message='coroutine .* was never awaited',
                            category=RuntimeWarning)
    try:
      return run(argv)
    except Interrupted as e:
      print(str(e), file=sys.stderr)
      sys.exit(e.status)
    except caught as e:
      if traceback_wanted():
        raise
      fail(e)
  return wrapped


def define_distributed_flags():
  """The multi-host flags of train.py and eval.py."""
  flags.DEFINE_bool('distributed', False, 'call jax.distributed.initialize() (multi-host); on '
                    'TPU pods and SLURM/Open MPI GPU clusters it needs no other flag')
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (other clusters)')
  flags.DEFINE_integer('num_processes', None, 'number of processes (other clusters)')
  flags.DEFINE_integer('process_id', None, 'this process (other clusters)')


def initialize_distributed():
  """``jax.distributed.initialize`` when ``--distributed`` is set (a no-op otherwise)."""
  import jax
  f = flags.FLAGS
  if not f.distributed:
    return
  if jax.config.jax_platforms == 'cpu':
    # CPU collectives across processes (tests, rehearsals) go through gloo.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=f.coordinator_address,
                             num_processes=f.num_processes, process_id=f.process_id)


# Storage clients log every retry and fallback (with tracebacks), orbax (via
# absl) and TFDS their progress and their own view of a failure; what matters
# reaches the console as this package's own line.
_FILE_ONLY = storage.STORAGE_CLIENT_LOGGERS + ('absl', 'orbax', 'tensorflow_datasets',
                                               'asyncio')


class _ConsoleFilter(logging.Filter):
  """Warnings and errors from anyone but the storage clients; INFO only from this package."""

  def filter(self, record):
    if record.name.split('.')[0] in _FILE_ONLY:
      return False
    return record.levelno >= logging.WARNING or record.name.startswith('zsi_jax')


class _ConsoleFormatter(logging.Formatter):
  """Plain lines: the message, and ``warning:`` / ``error:`` before the serious ones
  (absl's ``I1207 12:00:00.123 pid file.py:50]`` prefix is for the log file)."""

  def format(self, record):
    text = record.getMessage()
    if record.levelno >= logging.ERROR:
      return f'error: {text}'
    return f'warning: {text}' if record.levelno >= logging.WARNING else text


def setup_logging(log_file: Optional[str] = None):
  """The console as above; INFO and up also into ``log_file`` when given.

  Call it first in ``main`` (before JAX starts its backends, which log), and
  :func:`log_to_file` later when the file is known only then.
  """
  root = logging.getLogger()
  root.setLevel(logging.INFO)
  for handler in root.handlers:
    if not isinstance(handler, logging.FileHandler) and not any(
        isinstance(f, _ConsoleFilter) for f in handler.filters):
      handler.addFilter(_ConsoleFilter())
      handler.setFormatter(_ConsoleFormatter())
  # absl's own logger takes its level from --verbosity; let its INFO reach the file.
  logging.getLogger('absl').setLevel(logging.INFO)
  if log_file:
    log_to_file(log_file)


class _LogFile(logging.FileHandler):
  """A log file that, once it cannot be written (a full disk), says so in one
  line and stops, instead of a traceback per record."""

  broken = False

  def emit(self, record):
    if not self.broken:
      super().emit(record)

  def handleError(self, record):
    if not self.broken:
      self.broken = True
      error = sys.exc_info()[1]
      print(f'warning: cannot write the log file {self.baseFilename} '
            f'({storage.describe_error(error) if error else "unknown error"}); it stops here',
            file=sys.stderr)


def log_to_file(log_file: str):
  """Everything logged at INFO and up also goes to ``log_file`` (folder created;
  in a bucket, uploaded every 30 s and at exit)."""
  if storage.is_url(log_file):
    handler = storage.UploadingLogHandler(log_file)
    # Uploaded for the last time at exit, before the storage clients shut down
    # (logging's own shutdown would come after theirs).
    import atexit
    atexit.register(handler.close)
  else:
    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    handler = _LogFile(log_file)
  handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  logging.getLogger().addHandler(handler)
