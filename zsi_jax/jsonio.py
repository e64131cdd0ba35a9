"""Reading JSON files with errors that name the file; writing them atomically.

Paths may be local or URLs (``gs://...``): see :mod:`zsi_jax.storage`.
"""
from __future__ import annotations

import json

from zsi_jax import storage


def read_json(path: str, what: str = 'file'):
  """The parsed contents of ``path``.

  Raises FileNotFoundError ("<what> not found: <path>") or ValueError
  ("<path> is not valid JSON: ...").
  """
  if not storage.exists(path):
    raise FileNotFoundError(f'{what} not found: {path}')
  try:
    return json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path} is not valid JSON: {e}') from None


def write_json(path: str, value, indent=None):
  """Writes ``value`` to ``path`` atomically, so readers never see half a file."""
  storage.write_text(path, json.dumps(value, indent=indent))
