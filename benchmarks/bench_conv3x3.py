"""The 3x3 convolution's forms (``layers.Conv3x3`` impls) on the model's shapes.

python benchmarks/bench_conv3x3.py [--repeats 5] [--impls conv,mixed,gemm,winograd]

For each shape (the mask head's four convolutions on 200 RoIs at 14x14, the
FPN/RPN convolution on P2 and on P4 at 512x512, batch 2; 256 channels) and
each form, prints the forward time and the forward + backward time (input
and kernel gradients), min and median of ``--repeats`` calls after
compilation, and the largest difference from XLA's convolution relative to
the output's scale. Numbers for docs/PERFORMANCE.md, change 15.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from zsi_jax.modeling.layers import _conv3x3, conv3x3_mixed, conv3x3_winograd, im2col3x3

SHAPES = {'mask head, 200 RoIs': (200, 14, 14, 256),
          'P2, 512x512 batch 2': (2, 128, 128, 256),
          'P4, 512x512 batch 2': (2, 32, 32, 256)}

FORMS = {
    'conv': _conv3x3,
    'mixed': conv3x3_mixed,
    'gemm': lambda x, k: im2col3x3(x) @ k.reshape(-1, k.shape[-1]),
    'winograd': conv3x3_winograd,
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


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--impls', default=','.join(FORMS))
  args = p.parse_args()
  print(f'device {jax.devices()[0].device_kind}; seconds, min / median of {args.repeats}')
  for name, shape in SHAPES.items():
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, shape[-1], shape[-1])) * 0.03
    ref = _conv3x3(x, k)
    scale = float(jnp.abs(ref).max())
    print(f'\n{name} {shape}')
    for impl in args.impls.split(','):
      f = FORMS[impl]
      fwd = jax.jit(f)
      err = float(jnp.abs(fwd(x, k) - ref).max()) / scale
      grad = jax.jit(jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), (0, 1)))
      t_f = seconds(fwd, x, k, repeats=args.repeats)
      t_b = seconds(grad, x, k, repeats=args.repeats)
      print(f'  {impl:9s} forward {t_f[0]:.3f} / {t_f[1]:.3f}   forward+backward '
            f'{t_b[0]:.3f} / {t_b[1]:.3f}   max error / scale {err:.1e}', flush=True)


if __name__ == '__main__':
  main()
