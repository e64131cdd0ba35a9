"""Every code block of README.md runs, on the tiny trained workdir, so no snippet rots.

Blocks run in README order in one scratch folder holding ``runs/shapes`` (a
copy of the tiny workdir), ``data/generated/zsi_shapes`` (its dataset) and
``image.png``. Shell commands run with the repository's scripts and
``tests/tiny_config.py`` in place of ``configs/shapes.py``; bracketed optional
arguments are dropped and placeholders (DIR_OR_IMAGE, OUT) filled in. Python
blocks run as they are. A block that cannot run here (COCO data, a bucket, a
TPU slice, a 9-minute job) is preceded by ``<!-- not run: REASON -->``; a
``text`` block is not code. Anything else fails the test.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.scripts import ROOT, SCRIPT_ENV

README = os.path.join(ROOT, 'README.md')
NOT_RUN = re.compile(r'<!-- not run: (.+?) -->')
SHELL = ('', 'sh', 'bash', 'shell')


def blocks(text):
  """[(language, code, line number, reason not run or None)] of the fenced blocks."""
  out, lines, i = [], text.splitlines(), 0
  while i < len(lines):
    m = re.match(r'^```(\w*)\s*$', lines[i])
    if not m:
      i += 1
      continue
    start, lang = i, m.group(1)
    end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith('```'))
    before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), '')
    reason = NOT_RUN.search(before)
    out.append((lang, '\n'.join(lines[start + 1:end]), start + 1,
                reason.group(1) if reason else None))
    i = end + 1
  return out


def commands(code):
  """The commands of a shell block: continuation lines joined, comments dropped."""
  joined = re.sub(r'\\\n\s*', ' ', code)
  return [l.split(' # ')[0].strip() for l in joined.splitlines()
          if l.strip() and not l.strip().startswith('#')]


def as_run_here(command, data):
  """A README command for the scratch folder: this checkout's scripts, the tiny
  config and its dataset, no optional arguments, placeholders filled in."""
  command = re.sub(r'\s\[[^\]]*\]', '', command)
  words = shlex.split(command)
  assert words[0] == 'python' and words[1].endswith('.py'), f'not a python command: {command}'
  words = [sys.executable, os.path.join(ROOT, words[1])] + words[2:]
  fill = {'DIR_OR_IMAGE': 'image.png', 'OUT': 'out', 'configs/shapes.py':
          os.path.join(ROOT, 'tests', 'tiny_config.py')}
  words = [fill.get(w, w) for w in words]
  if words[1].endswith('train.py'):
    words += [f'--config.data.root={data}', '--config.total_steps=3']
  return words


@pytest.fixture(scope='module')
def scratch(trained, tmp_path_factory):
  data, workdir = trained
  folder = tmp_path_factory.mktemp('readme')
  shutil.copytree(workdir, folder / 'runs' / 'shapes',
                  ignore=shutil.ignore_patterns('eval', 'predictions', '*.png', '*.zsi'))
  (folder / 'data' / 'generated').mkdir(parents=True)
  os.symlink(data, folder / 'data' / 'generated' / 'zsi_shapes')
  images = os.path.join(data, 'images')
  shutil.copy(os.path.join(images, sorted(os.listdir(images))[0]), folder / 'image.png')
  return str(folder), str(folder / 'data' / 'generated' / 'zsi_shapes')


def test_every_readme_block_runs_or_says_why_not(scratch):
  folder, data = scratch
  ran, not_run = [], []
  for lang, code, line, reason in blocks(open(README).read()):
    where = f'README.md:{line}'
    if reason or lang == 'text':
      not_run.append((where, reason or 'text'))
      continue
    if lang == 'python':
      r = subprocess.run([sys.executable, '-c', code], cwd=folder, env=SCRIPT_ENV,
                         capture_output=True, text=True, timeout=600)
      assert r.returncode == 0, f'{where}: the Python block fails\n{r.stderr[-3000:]}'
      ran.append(where)
      continue
    assert lang in SHELL, f'{where}: a {lang!r} block; mark it <!-- not run: why --> or text'
    for command in commands(code):
      r = subprocess.run(as_run_here(command, data), cwd=folder, env=SCRIPT_ENV,
                         capture_output=True, text=True, timeout=600)
      assert r.returncode == 0, f'{where}: {command}\n{r.stdout[-1500:]}{r.stderr[-3000:]}'
    ran.append(where)
  print(f'\nREADME blocks run: {len(ran)}; not run: ' +
        '; '.join(f'{w} ({why})' for w, why in not_run))
  assert len(ran) >= 5
  assert os.path.exists(os.path.join(folder, 'overlay.png'))
