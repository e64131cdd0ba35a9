"""An exported model file against Predictor.from_checkpoint: size, start-up, images/second.

Each side runs in a fresh Python process (the way a notebook or a server
starts), alternating, ``--repeats`` times. Measured per process:

- ``start``: process start to the first result (imports, loading, compiling
  or deserialising, and the first image);
- ``load`` and ``first``: the load call and the first ``predict`` alone;
- ``images/s``: ``--images`` further ``predict`` calls on the same test images.

The table gives the median and (min-max) of the repeats. The model file is
written by export.py from ``--workdir`` first (its time is printed too).

With --compilation_cache both sides start with JAX's persistent compilation
cache warmed by one earlier start (a server restarting on the same host).

Usage: python benchmarks/bench_export.py --workdir runs/shapes [--repeats 3] [--images 20]
    [--compilation_cache]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from zsi_jax import host  # noqa: E402

# One measurement in a fresh process; prints a JSON line.
_CHILD = r'''
import time
t0 = time.time()
import glob, json, sys
side, source, folder, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if side == 'exported':
  from zsi_jax.exported import ExportedModel
  t1 = time.time()
  model = ExportedModel.load(source)
else:
  from zsi_jax.inference import Predictor
  t1 = time.time()
  model = Predictor.from_checkpoint(source)
t2 = time.time()
images = sorted(glob.glob(folder + '/*.png'))[:n]
classes = model.info.unseen
model.predict(images[0], class_names=classes)
t3 = time.time()
from zsi_jax.segmenter import load_image
arrays = [load_image(p) for p in images]
t4 = time.time()
for a in arrays:
  model.predict(a, class_names=classes)
t5 = time.time()
print(json.dumps(dict(start=t3 - t0, imports=t1 - t0, load=t2 - t1, first=t3 - t2,
                      images_per_s=len(arrays) / (t5 - t4))))
'''


def measure(side, source, folder, n, cache=''):
  env = dict(os.environ, PYTHONPATH=ROOT)
  if cache:   # JAX's persistent compilation cache: later starts skip XLA's compile
    env.update(JAX_COMPILATION_CACHE_DIR=os.path.join(cache, side),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  r = subprocess.run([sys.executable, '-c', _CHILD, side, source, folder, str(n)], cwd=ROOT,
                     env=env, capture_output=True, text=True)
  if r.returncode:
    raise RuntimeError(r.stderr[-2000:])
  return json.loads(r.stdout.strip().splitlines()[-1])


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument('--workdir', default='runs/shapes')
  ap.add_argument('--images_from', default='', help='folder of test images (default: the '
                  "workdir's ZSI test images)")
  ap.add_argument('--repeats', type=int, default=3)
  ap.add_argument('--images', type=int, default=20)
  ap.add_argument('--dtype', default='float32')
  ap.add_argument('--compilation_cache', action='store_true', help='both sides with a '
                  "persistent compilation cache, warmed by one start first")
  ap.add_argument('--out', default='', help='append the result as a JSON line here')
  args = ap.parse_args()

  from zsi_jax import trained
  folder = args.images_from
  if not folder:
    t = trained.load(args.workdir)
    folder = t.info.image_dir('test_zsi')
  tmp = tempfile.mkdtemp()
  path = os.path.join(tmp, 'model.zsi')
  t0 = time.time()
  subprocess.run([sys.executable, 'export.py', '--workdir', args.workdir, '--out', path,
                  '--dtype', args.dtype], cwd=ROOT, check=True, capture_output=True)
  export_s = time.time() - t0
  size = os.path.getsize(path)
  cache = os.path.join(tmp, 'jax_cache') if args.compilation_cache else ''
  sources = {'exported': path, 'predictor': args.workdir}
  if cache:
    for side, source in sources.items():
      measure(side, source, folder, 1, cache)
  runs = {'exported': [], 'predictor': []}
  for _ in range(args.repeats):
    for side, source in sources.items():
      runs[side].append(measure(side, source, folder, args.images, cache))
  h = host.describe()
  import jax
  print(f'host: {host.short_name(h)}, {h["cores"]} cores, backend {jax.default_backend()}')
  print(f'model file: {size / 2**20:.1f} MiB ({args.dtype}); export.py took {export_s:.1f} s'
        + ('; persistent compilation cache, warm' if cache else ''))
  print(f'{"":22s}{"exported":>22s}{"Predictor":>22s}')
  summary = {}
  for key, unit in (('start', 's'), ('imports', 's'), ('load', 's'), ('first', 's'),
                    ('images_per_s', '')):
    cells = []
    for side in ('exported', 'predictor'):
      v = np.array([r[key] for r in runs[side]])
      summary[f'{side}_{key}'] = dict(median=float(np.median(v)), min=float(v.min()),
                                      max=float(v.max()))
      cells.append(f'{np.median(v):7.2f} ({v.min():.2f}-{v.max():.2f})')
    print(f'{key + (" [" + unit + "]" if unit else ""):22s}{cells[0]:>22s}{cells[1]:>22s}')
  if args.out:
    with open(args.out, 'a') as f:
      f.write(json.dumps(dict(bench='export', workdir=args.workdir, dtype=args.dtype,
                              compilation_cache=bool(cache), repeats=args.repeats, images=args.images, size_bytes=size,
                              export_s=export_s, host=h, backend=jax.default_backend(),
                              date=time.strftime('%Y-%m-%d'), **summary)) + '\n')


if __name__ == '__main__':
  main()
