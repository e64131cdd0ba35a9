"""Metric logging: one JSON line per logged step plus TensorBoard event files.

tensorboardX writes TensorBoard events without TensorFlow. Only process 0
writes, so multi-host runs log once. The workdir may be a bucket URL: there
both files are kept in memory and uploaded whole every ``upload_every``
seconds and on ``flush``/``close`` (object stores cannot append).
"""
from __future__ import annotations

import io
import json
import math
from typing import Dict, Optional

import jax
import numpy as np

from zsi_jax import storage


class MetricWriter:
  """Writes scalars to ``workdir/metrics.jsonl`` and ``workdir/tensorboard/``."""

  def __init__(self, workdir: str, enabled: Optional[bool] = None, upload_every: float = 30.0,
               resume_step: Optional[int] = None):
    """``resume_step``: the step a run resumes from; rows of later steps (logged
    by the run that stopped after that checkpoint) are dropped from both logs,
    so every step appears once."""
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = storage.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.enabled:
      if resume_step is not None:
        _drop_rows_after(self.path, resume_step)
      self._file = storage.AppendFile(self.path, upload_every=upload_every)
      try:
        from tensorboardX import SummaryWriter
      except ImportError:  # logging to JSONL alone still works
        return
      events = storage.join(workdir, 'tensorboard')
      if storage.is_url(events):
        _register_bucket_events(events)
      # purge_step: TensorBoard hides the events of later steps from earlier files.
      self._tb = SummaryWriter(events, flush_secs=upload_every,
                               purge_step=None if resume_step is None else resume_step + 1)

  def write(self, step: int, scalars: Dict[str, float]):
    """Logs ``scalars`` (name -> number) at ``step``."""
    if not self.enabled:
      return
    clean = {k: _to_float(v) for k, v in scalars.items()}
    self._file.write(json.dumps({'step': int(step), **clean}) + '\n')
    if self._tb is not None:
      for k, v in clean.items():
        if v is not None and math.isfinite(v):
          self._tb.add_scalar(k, v, int(step))

  def flush(self):
    """Makes everything written so far visible in the workdir (uploads it to a bucket)."""
    if self.enabled:
      self._file.flush()
      if self._tb is not None:
        self._tb.flush()

  def close(self):
    if self.enabled:
      self._file.close()
      if self._tb is not None:
        self._tb.close()


def _drop_rows_after(path: str, step: int):
  """Rewrites ``path`` (JSON lines with a 'step') without the rows after ``step``."""
  if not storage.exists(path):
    return
  lines = storage.read_text(path).splitlines(keepends=True)
  kept = []
  for line in lines:
    try:
      if json.loads(line)['step'] > step:
        continue
    except (ValueError, KeyError, TypeError):
      if not line.endswith('\n'):
        continue  # the torn last line of a killed run
    kept.append(line)
  if len(kept) != len(lines):
    storage.write_text(path, ''.join(kept))


class _BucketEventsFile:
  """A TensorBoard events file in a bucket: kept in memory, uploaded whole on flush."""

  def __init__(self, url: str):
    self.url, self.buffer = url, io.BytesIO()

  def write(self, data: bytes):
    self.buffer.write(data)

  def flush(self):
    storage.write_bytes(self.url, self.buffer.getvalue())

  def close(self):
    self.flush()


class _BucketEventsFactory:
  def open(self, path):
    return _BucketEventsFile(path)

  def directory_check(self, path):
    del path  # buckets have no folders to create


def _register_bucket_events(url: str):
  """tensorboardX writes ``scheme://`` paths through the factory registered for the scheme."""
  from tensorboardX import record_writer
  record_writer.register_writer_factory(url.split(':', 1)[0], _BucketEventsFactory())


def _to_float(v):
  v = float(np.asarray(v))
  return v if math.isfinite(v) else None if math.isnan(v) else v


def read_metrics(workdir: str):
  """Reads back the JSONL log as a list of dicts."""
  text = storage.read_text(storage.join(workdir, 'metrics.jsonl'))
  return [json.loads(line) for line in text.splitlines() if line.strip()]
