"""Metric logging: one JSON line per logged step plus TensorBoard event files.

tensorboardX writes TensorBoard events without TensorFlow. Only process 0
writes, so multi-host runs log once.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, Optional

import jax
import numpy as np


class MetricWriter:
  """Writes scalars to ``workdir/metrics.jsonl`` and ``workdir/tensorboard/``."""

  def __init__(self, workdir: str, enabled: Optional[bool] = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)
      self._file = open(self.path, 'a')
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
      except ImportError:  # logging to JSONL alone still works
        self._tb = None

  def write(self, step: int, scalars: Dict[str, float]):
    """Logs ``scalars`` (name -> number) at ``step``."""
    if not self.enabled:
      return
    clean = {k: _to_float(v) for k, v in scalars.items()}
    self._file.write(json.dumps({'step': int(step), **clean}) + '\n')
    self._file.flush()
    if self._tb is not None:
      for k, v in clean.items():
        if v is not None and math.isfinite(v):
          self._tb.add_scalar(k, v, int(step))

  def close(self):
    if self.enabled:
      self._file.close()
      if self._tb is not None:
        self._tb.close()


def _to_float(v):
  v = float(np.asarray(v))
  return v if math.isfinite(v) else None if math.isnan(v) else v


def read_metrics(workdir: str):
  """Reads back the JSONL log as a list of dicts."""
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
