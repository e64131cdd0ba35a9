"""Times multi-level RoIAlign and NMS: zsi_jax (jit, after compilation) beside torchvision.

RoIAlign: 512 RoIs x 2 images, 256 channels, P2..P5 of a 1024x1024 image,
7x7 output, sampling ratio 2 (zsi_jax vmaps ``multilevel_roi_align``;
torchvision runs ``MultiScaleRoIAlign`` on the same maps and boxes); forward,
and forward plus the gradient with respect to the features; with the size of
XLA's temporary arena for each (the memory the computation needs beyond its
inputs and outputs).
NMS: 2000 random boxes at IoU 0.7 (``nms_padded`` vs ``torchvision.ops.nms``).
Both use the same number of CPU threads.

Usage: python benchmarks/bench_ops.py [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import OrderedDict

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_step import median_seconds  # noqa: E402
from zsi_jax.ops import nms as nms_ops  # noqa: E402
from zsi_jax.ops import roi_align as ra  # noqa: E402


def random_rois(rng, n, size):
  xy = rng.uniform(0, size * 0.8, (n, 2))
  wh = rng.uniform(16, size * 0.5, (n, 2))
  return np.concatenate([xy, np.minimum(xy + wh, size)], 1).astype(np.float32)


def bench_roi_align(repeats, batch=2, rois=512, channels=256, size=1024):
  """(forward, gradient) rows: (name, zsi_jax s, torchvision s, zsi_jax XLA temp MiB).
  The gradient row times d(sum(pooled * g)) / d(features), with its forward pass."""
  rng = np.random.default_rng(0)
  feats = [rng.normal(size=(batch, size // 2**l, size // 2**l, channels)).astype(np.float32)
           for l in (2, 3, 4, 5)]
  boxes = np.stack([random_rois(rng, rois, size) for _ in range(batch)])
  g = rng.normal(size=(batch, rois, 7, 7, channels)).astype(np.float32)
  pool = jax.vmap(lambda f2, f3, f4, f5, r: ra.multilevel_roi_align([f2, f3, f4, f5], r, 7, 2))
  jf = [jnp.asarray(f) for f in feats]
  jb, jg = jnp.asarray(boxes), jnp.asarray(g)
  fwd = jax.jit(pool).lower(*jf, jb).compile()
  grad = jax.jit(jax.grad(lambda fs, r: jnp.sum(pool(*fs, r) * jg))).lower(jf, jb).compile()
  temp = lambda c: c.memory_analysis().temp_size_in_bytes / 2**20
  t_fwd = median_seconds(lambda: jax.block_until_ready(fwd(*jf, jb)), repeats, warmup=True)
  t_grad = median_seconds(lambda: jax.block_until_ready(grad(jf, jb)), repeats, warmup=True)
  pooler = MultiScaleRoIAlign(['p2', 'p3', 'p4', 'p5'], 7, 2)
  tf = OrderedDict((f'p{l}', torch.tensor(f).permute(0, 3, 1, 2).contiguous())
                   for l, f in zip((2, 3, 4, 5), feats))
  tb = [torch.tensor(b) for b in boxes]
  tg = torch.tensor(g).reshape(-1, 7, 7, channels).permute(0, 3, 1, 2)
  with torch.no_grad():
    tv_fwd = median_seconds(lambda: pooler(tf, tb, [(size, size)] * batch), repeats, warmup=True)
  for t in tf.values():
    t.requires_grad_(True)

  def tv_grad():
    for t in tf.values():
      t.grad = None
    (pooler(tf, tb, [(size, size)] * batch) * tg).sum().backward()
  tv_grad_s = median_seconds(tv_grad, repeats, warmup=True)
  name = f'multilevel RoIAlign {batch}x{rois} RoIs, {channels} ch, {size}^2'
  return [(name, t_fwd, tv_fwd, temp(fwd)), (name + ', gradient', t_grad, tv_grad_s, temp(grad))]


def bench_nms(repeats, n=2000):
  rng = np.random.default_rng(0)
  b = random_rois(rng, n, 1024)
  s = rng.random(n).astype(np.float32)
  fn = jax.jit(lambda bb, ss: nms_ops.nms_padded(bb, ss, 0.7, n))
  jb, js = jnp.asarray(b), jnp.asarray(s)
  t_jax = median_seconds(lambda: jax.block_until_ready(fn(jb, js)), repeats, warmup=True)
  tb, ts = torch.tensor(b), torch.tensor(s)
  t_tv = median_seconds(lambda: torchvision.ops.nms(tb, ts, 0.7), repeats, warmup=True)
  return t_jax, t_tv


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--repeats', type=int, default=5)
  args = p.parse_args()
  threads = os.cpu_count() or 1
  torch.set_num_threads(threads)
  print(f'devices: jax={jax.devices()[0].platform} torch=cpu threads={threads}')
  rows = bench_roi_align(args.repeats) + [('NMS 2000 boxes @0.7', *bench_nms(args.repeats), None)]
  print(f'{"op":<58} {"zsi_jax ms":>11} {"torchvision ms":>15} {"ratio tv/jax":>13} '
        f'{"XLA temp MiB":>13}')
  for name, tj, tt, temp in rows:
    print(f'{name:<58} {tj * 1e3:>11.1f} {tt * 1e3:>15.1f} {tt / tj:>13.2f} '
          f'{"" if temp is None else f"{temp:.0f}":>13}')


if __name__ == '__main__':
  main()
