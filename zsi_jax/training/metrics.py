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

  def __init__(self, workdir: str, enabled: Optional[bool] = None, upload_every: float = 30.0):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = storage.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.enabled:
      self._file = storage.AppendFile(self.path, upload_every=upload_every)
      try:
        from tensorboardX import SummaryWriter
      except ImportError:  # logging to JSONL alone still works
        return
      events = storage.join(workdir, 'tensorboard')
      if storage.is_url(events):
        _register_bucket_events(events)
      self._tb = SummaryWriter(events, flush_secs=upload_every)

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
