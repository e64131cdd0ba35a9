"""Writes docs/CONFIG.md, every config setting with its default, allowed values
and meaning, from ``zsi_jax.config_defaults.SCHEMA``.

python tools/config_doc.py [--out docs/CONFIG.md] [--check]

--check writes nothing and exits 1 when the file is not what the schema gives
(tests/test_config_doc.py runs it).
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from zsi_jax.config_defaults import SCHEMA, Key, Range, keys  # noqa: E402

OUT = os.path.join('docs', 'CONFIG.md')
HEADER = """# Configuration

Every setting of an experiment config: its default (the authors' COCO
model), what it may be, and what it means. Generated from
`zsi_jax/config_defaults.py` by `python tools/config_doc.py`; a test checks
that it is current. A config file (`configs/`) starts from these defaults
and changes what differs; any key can be changed on the command line,
`--config.model.mask_head.channels=64`. `config_check.validate` refuses an
unknown key (naming the closest known one), a value of another type than the
default's, and a value outside the allowed choices or range. Resuming a
workdir refuses changes to the keys that change what a step computes
(docs/TRAINING.md).
"""

SECTIONS = {'': 'Run', 'data': 'Data', 'model': 'Model', 'init': 'Initialisation',
            'optim': 'Optimiser'}


def _value(v) -> str:
  if isinstance(v, str):
    return f"`'{v}'`"
  if isinstance(v, float):
    return f'`{v:.1f}`' if v == int(v) else f'`{v:.6g}`'
  if isinstance(v, (tuple, list)):
    return '`(' + ', '.join(_value(x).strip('`') for x in v) + (',)`' if len(v) == 1 else ')`')
  return f'`{v}`'


def _allowed(key: Key) -> str:
  if isinstance(key.allowed, Range):
    sequence = isinstance(key.default, (tuple, list))
    first = key.default[0] if sequence else key.default
    kind = 'integer' if isinstance(first, int) else 'number'
    return f'{"each " if sequence else ""}{kind} {key.allowed}'
  if isinstance(key.allowed, tuple):
    return ', '.join(_value(c) for c in key.allowed)
  if isinstance(key.default, bool):
    return 'true, false'
  return 'any string' if isinstance(key.default, str) else ''


def render() -> str:
  lines = [HEADER]
  rows = {}
  for dotted, key in keys(SCHEMA):
    section = dotted.split('.')[0] if '.' in dotted else ''
    rows.setdefault(section, []).append((dotted, key))
  for section, title in SECTIONS.items():
    lines += [f'## {title}', '', '| key | default | allowed | meaning |', '|---|---|---|---|']
    lines += [f'| `{dotted}` | {_value(key.default)} | {_allowed(key)} | '
              f'{key.doc.replace("|", "/")} |' for dotted, key in rows.pop(section)]
    lines.append('')
  assert not rows, f'sections without a title: {sorted(rows)}'
  return '\n'.join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--out', default=os.path.join(ROOT, OUT))
  p.add_argument('--check', action='store_true')
  a = p.parse_args()
  text = render()
  if a.check:
    current = open(a.out).read() if os.path.exists(a.out) else ''
    if current != text:
      sys.exit(f'error: {a.out} is not current; run python tools/config_doc.py')
    return
  with open(a.out, 'w') as f:
    f.write(text)
  print(f'wrote {a.out} ({len(list(keys(SCHEMA)))} settings)')


if __name__ == '__main__':
  main()
