"""Images/second of the threaded Loader and the grain pipeline (TFDS array_record).

Two datasets: ZSI-Shapes (128x128 PNGs, configs/shapes.py sizes) and synthetic
COCO-sized images (640x480 JPEGs with a few polygon instances each, loaded at
scale (800, 1333) into the padded 1344x1344 canvas of configs/coco_common.py).
Each pipeline yields training batches (shuffle + flip); the first batch
(start-up, worker spawn) is not timed. grain runs with 0 (decoding in the
main process), 1, 2, 4, ... worker processes up to the CPU count; the table
gives images/second, per core used, and how many cores a host needs to feed
8 accelerators at --step_rate images/second each (default: the train-step
rate measured on one H100, docs/PERFORMANCE.md).

Images are decoded in full: Pillow's JPEG draft mode (decoding at 1/2, 1/4,
1/8 scale) only helps when the image shrinks, and COCO's 640x480 photos grow
to 1067x800 under the paper's (800, 1333) resize.

Usage: python benchmarks/bench_loader.py [--batches 8] [--threads 2] [--step_rate 67]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsi_jax.data import grain_pipeline as gp  # noqa: E402
from zsi_jax.data import input_pipeline as ip  # noqa: E402
from zsi_jax.data import shapes, tfds_coco  # noqa: E402

SIZES = {
    'shapes': dict(image_size=(128, 128), scale=(128, 128), max_instances=12, mask_size=56),
    'coco': dict(image_size=(1344, 1344), scale=(800, 1333), max_instances=100, mask_size=56),
}


def make_synthetic_coco(root: str, num_images: int, seed: int = 0) -> str:
  """``num_images`` random 640x480 JPEGs with 3-8 polygon instances; returns the json."""
  rng = np.random.default_rng(seed)
  os.makedirs(os.path.join(root, 'images'), exist_ok=True)
  images, anns = [], []
  for i in range(1, num_images + 1):
    low = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    img = Image.fromarray(low).resize((640, 480), Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 9))):
      cx, cy, r = rng.uniform(60, 580), rng.uniform(60, 420), rng.uniform(15, 120)
      th = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 12))))
      rad = r * rng.uniform(0.5, 1.0, th.size)
      xs = np.clip(cx + rad * np.cos(th), 0, 639)
      ys = np.clip(cy + rad * np.sin(th), 0, 479)
      draw.polygon(list(zip(xs, ys)), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
      poly = np.stack([xs, ys], 1).ravel().round(2).tolist()
      x0, y0 = float(xs.min()), float(ys.min())
      anns.append(dict(id=len(anns) + 1, image_id=i, category_id=int(rng.integers(1, 4)),
                       bbox=[x0, y0, float(xs.max()) - x0, float(ys.max()) - y0],
                       segmentation=[poly], iscrowd=0, area=0.0))
    name = f'{i:06d}.jpg'
    img.save(os.path.join(root, 'images', name), quality=90)
    images.append(dict(id=i, file_name=name, height=480, width=640))
  path = os.path.join(root, 'instances.json')
  with open(path, 'w') as f:
    json.dump(dict(images=images, annotations=anns,
                   categories=[dict(id=c, name=f'c{c}') for c in (1, 2, 3)]), f)
  return path


def images_per_second(iterator, batches: int, batch_size: int) -> float:
  next(iterator)  # start-up: thread pools, worker processes, first decode
  t0 = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  seconds = time.perf_counter() - t0
  iterator.close()  # stops grain's workers and frees their shared memory
  return batches * batch_size / seconds


def bench(name, ann_file, image_dir, out_dir, args):
  tfds_coco.build(os.path.dirname(ann_file), {'train': (ann_file, image_dir)}, out_dir)
  cat_ids = tfds_coco.split_metadata(out_dir, 'train')['cat_ids']
  records, _ = ip.load_coco(ann_file, image_dir, cat_ids)
  kw = dict(SIZES[name], batch_size=args.batch_size, train=True, seed=0)
  rows = []
  loader = ip.Loader(records, process_index=0, process_count=1, num_threads=args.threads, **kw)
  rows.append((f'Loader ({args.threads} threads)',
               images_per_second(loader.train_iterator(0), args.batches, args.batch_size)))
  one = gp.grain.sharding.ShardOptions(shard_index=0, shard_count=1)
  for workers in worker_counts(os.cpu_count()):
    g = gp.from_tfds(out_dir, 'train', shard_options=one, worker_count=workers,
                     num_threads=args.threads, **kw)
    label = f'grain ({workers} workers, {args.threads} threads)'
    rows.append((label, images_per_second(g.train_iterator(0), args.batches, args.batch_size)))
  return rows


def worker_counts(cpus: int):
  """0, 1, 2, 4, ... up to ``cpus`` (and ``cpus`` itself)."""
  counts, n = [0], 1
  while n < cpus:
    counts.append(n)
    n *= 2
  return counts + [cpus]


def cores_used(label: str, threads: int, cpus: int) -> int:
  """CPUs a pipeline row can keep busy: its decoding threads, in the main process
  or in each worker process, at most the machine's."""
  workers = int(label.split('(')[1].split()[0]) if label.startswith('grain (') else 0
  return min(cpus, max(workers, 1) * threads)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--batches', type=int, default=8, help='timed batches per pipeline')
  p.add_argument('--batch_size', type=int, default=8)
  p.add_argument('--threads', type=int, default=2)
  p.add_argument('--step_rate', type=float, default=67.1,
                 help='images/second one accelerator trains at (H100, float32, 800x1344)')
  p.add_argument('--coco_images', type=int, default=32)
  p.add_argument('--workdir', default=None, help='where the data goes (default: a temp dir)')
  args = p.parse_args()
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()
  work = args.workdir or tempfile.mkdtemp(prefix='bench_loader_')
  num = max(args.batch_size * (args.batches + 1), 16)
  sroot = os.path.join(work, 'shapes')
  if not os.path.exists(os.path.join(sroot, 'split.json')):
    shapes.generate(sroot, shapes.ShapesConfig(num_train=num, num_val=1, num_test=1, vector_dim=8),
                    log=lambda *_: None)
  croot = os.path.join(work, 'coco')
  cjson = os.path.join(croot, 'instances.json')
  if not os.path.exists(cjson):
    make_synthetic_coco(croot, args.coco_images)
  table = [('ZSI-Shapes 128x128 -> 128x128', bench(
      'shapes', os.path.join(sroot, 'annotations', 'train.json'), os.path.join(sroot, 'images'),
      os.path.join(work, 'shapes_tfds'), args))]
  table.append(('synthetic 640x480 JPEG -> 1344x1344', bench(
      'coco', cjson, os.path.join(croot, 'images'), os.path.join(work, 'coco_tfds'), args)))
  need = 8 * args.step_rate
  print(f'\nbatch {args.batch_size}, {args.batches} timed batches, {os.cpu_count()} CPUs; '
        f'8 accelerators at {args.step_rate:g} images/s need {need:.0f} images/s')
  print(f'| {"dataset":<36} | {"pipeline":<28} | {"images/s":>9} | {"per core":>8} | '
        f'{"cores for 8":>11} |')
  print(f'|{"-" * 38}|{"-" * 30}|{"-" * 11}|{"-" * 10}|{"-" * 13}|')
  for dataset, rows in table:
    for label, ips in rows:
      per_core = ips / cores_used(label, args.threads, os.cpu_count())
      print(f'| {dataset:<36} | {label:<28} | {ips:9.1f} | {per_core:8.1f} | '
            f'{need / per_core:11.0f} |')


if __name__ == '__main__':
  main()
