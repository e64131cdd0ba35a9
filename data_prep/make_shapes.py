"""Writes the ZSI-Shapes dataset (COCO format) and its class-vector files.

python data_prep/make_shapes.py [--preset default|hard] [--out DIR] [--seed 0]

--out defaults to data/generated/zsi_shapes (default preset) or
data/generated/zsi_shapes_hard. The other flags override the preset's values.
"""
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsi_jax import cli  # noqa: E402
from zsi_jax.data import shapes  # noqa: E402


def main():
  p = cli.ArgumentParser(description=__doc__)
  p.add_argument('--preset', default='default', choices=sorted(shapes.PRESETS))
  p.add_argument('--out', default='', help='default: data/generated/<preset name>')
  p.add_argument('--seed', type=int)
  p.add_argument('--size', type=int, help='image side in pixels (object sizes scale with it)')
  p.add_argument('--num_train', type=int)
  p.add_argument('--num_val', type=int)
  p.add_argument('--num_test', type=int)
  p.add_argument('--dim', type=int, help='word-vector dimension')
  a = p.parse_args()
  d = shapes.PRESETS[a.preset]
  given = lambda v, default: default if v is None else v
  size = given(a.size, d.image_size)
  cfg = dataclasses.replace(
      d, seed=given(a.seed, d.seed), image_size=size, num_train=given(a.num_train, d.num_train),
      num_val=given(a.num_val, d.num_val), num_test=given(a.num_test, d.num_test),
      vector_dim=given(a.dim, d.vector_dim), min_radius=d.min_radius * size / d.image_size,
      max_radius=d.max_radius * size / d.image_size)
  out = a.out or os.path.join('data', 'generated', cfg.name)
  t = time.time()
  shapes.generate(out, cfg)
  print(f'wrote {out} in {time.time() - t:.1f} s')


if __name__ == '__main__':
  cli.main(lambda _: main())(None)
