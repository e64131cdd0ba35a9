"""The 3x3 convolution's computations (``layers.conv3x3_direct`` and
``modeling/cpu_kernels.py``) on the model's shapes.

python benchmarks/bench_conv3x3.py [--repeats 5] [--forms direct,im2col_grad,winograd]
    [--shapes coco|shapes|all]

For each shape and form prints the forward time and the forward + backward
time (input and kernel gradients), min and median of ``--repeats`` calls after
compilation, the compile time of the backward program, and the largest
difference from XLA's convolution relative to the output's scale. 'coco': the
R50-FPN at 512x512, batch 2 (mask head on 200 RoIs, FPN/RPN on P2 and P4, 256
channels); 'shapes': the ZSI-Shapes config (batch 8, 64 channels; mask head
32 channels on 8 and on 64 RoIs).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from zsi_jax.modeling import cpu_kernels
from zsi_jax.modeling.layers import conv3x3_direct

SHAPES = {
    'coco': {'mask head, 200 RoIs': (200, 14, 14, 256),
             'P2, 512x512 batch 2': (2, 128, 128, 256),
             'P4, 512x512 batch 2': (2, 32, 32, 256)},
    'shapes': {'mask head, 64 RoIs': (64, 14, 14, 32),
               'mask head, 8 RoIs': (8, 14, 14, 32),
               'P2, 128x128 batch 8': (8, 32, 32, 64),
               'P4, 128x128 batch 8': (8, 8, 8, 64)},
}

FORMS = {
    'direct': conv3x3_direct,
    'im2col_grad': cpu_kernels.conv3x3_im2col_grad,
    'winograd': cpu_kernels.conv3x3_winograd,
}


def seconds(fn, *args, repeats: int):
  """(min, median) seconds of ``fn(*args)`` after one compiling call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return min(times), float(np.median(times))


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--forms', default=','.join(FORMS))
  p.add_argument('--shapes', default='all', choices=['all'] + sorted(SHAPES))
  args = p.parse_args()
  print(f'device {jax.devices()[0].device_kind} ({cpu_model()}, {os.cpu_count()} cores); '
        f'seconds, min / median of {args.repeats}')
  groups = SHAPES if args.shapes == 'all' else {args.shapes: SHAPES[args.shapes]}
  for shapes in groups.values():
    for name, shape in shapes.items():
      x = jax.random.normal(jax.random.PRNGKey(0), shape)
      k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, shape[-1], shape[-1])) * 0.03
      ref = conv3x3_direct(x, k)
      scale = float(jnp.abs(ref).max())
      print(f'\n{name} {shape}')
      for form in args.forms.split(','):
        f = FORMS[form]
        fwd = jax.jit(f)
        err = float(jnp.abs(fwd(x, k) - ref).max()) / scale
        grad = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), (0, 1)))
        t0 = time.perf_counter()
        grad.lower(x, k).compile()
        compile_s = time.perf_counter() - t0
        t_f = seconds(fwd, x, k, repeats=args.repeats)
        t_b = seconds(grad, x, k, repeats=args.repeats)
        print(f'  {form:12s} forward {t_f[0]:.4f} / {t_f[1]:.4f}   forward+backward '
              f'{t_b[0]:.4f} / {t_b[1]:.4f}   compile {compile_s:.2f}   '
              f'max error / scale {err:.1e}', flush=True)


if __name__ == '__main__':
  main()
