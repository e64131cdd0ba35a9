"""Reading JSON files with errors that name the file; writing them atomically."""
from __future__ import annotations

import json
import os


def read_json(path: str, what: str = 'file'):
  """The parsed contents of ``path``.

  Raises FileNotFoundError ("<what> not found: <path>") or ValueError
  ("<path> is not valid JSON: ...").
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f'{what} not found: {path}')
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON: {e}') from None


def write_json(path: str, value, indent=None):
  """Writes ``value`` to ``path`` through a temporary file, so readers never see half a file."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(value, f, indent=indent)
  os.replace(path + '.tmp', path)
