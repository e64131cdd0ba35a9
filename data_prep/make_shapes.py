"""Writes the ZSI-Shapes dataset (COCO format) and its class-vector files.

python data_prep/make_shapes.py --out data/generated/zsi_shapes [--seed 0]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsi_jax.data import shapes  # noqa: E402


def main():
  d = shapes.ShapesConfig()
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument('--out', required=True)
  p.add_argument('--seed', type=int, default=d.seed)
  p.add_argument('--size', type=int, default=d.image_size, help='image side in pixels')
  p.add_argument('--num-train', type=int, default=d.num_train)
  p.add_argument('--num-val', type=int, default=d.num_val)
  p.add_argument('--num-test', type=int, default=d.num_test)
  p.add_argument('--dim', type=int, default=d.vector_dim, help='word-vector dimension')
  a = p.parse_args()
  cfg = shapes.ShapesConfig(seed=a.seed, image_size=a.size, num_train=a.num_train,
                            num_val=a.num_val, num_test=a.num_test, vector_dim=a.dim,
                            min_radius=d.min_radius * a.size / 128,
                            max_radius=d.max_radius * a.size / 128)
  t = time.time()
  shapes.generate(a.out, cfg)
  print(f'wrote {a.out} in {time.time() - t:.1f} s')


if __name__ == '__main__':
  main()
