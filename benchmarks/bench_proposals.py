"""Times the RPN proposal stage: zsi_jax (jit + vmap) beside torchvision's RPN.

Inputs: anchors of a 1024x1024 image (5 FPN levels, 3 anchors per location),
batch 2, random objectness and deltas. zsi_jax runs ``generate_proposals``
vmapped over the batch after compilation; torchvision runs
``BoxCoder.decode`` + ``RegionProposalNetwork.filter_proposals`` (the same
work) on the same inputs, on the CPU or the first CUDA device.

Usage: python benchmarks/bench_proposals.py [--mode train|test] [--repeats N]
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np
import torch
from torchvision.models.detection import rpn as tv_rpn
from torchvision.models.detection.anchor_utils import AnchorGenerator

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_step import median_seconds  # noqa: E402
from zsi_jax.ops import anchors as anchor_ops  # noqa: E402
from zsi_jax.ops.proposals import generate_proposals  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--mode', default='train', choices=['train', 'test'])
  p.add_argument('--repeats', type=int, default=5)
  p.add_argument('--batch', type=int, default=2)
  args = p.parse_args()
  pre, post = (2000, 2000) if args.mode == 'train' else (1000, 1000)
  hw = (1024, 1024)
  anchors = [np.asarray(a, np.float32) for a in anchor_ops.generate_anchors(hw)]
  sizes = [a.shape[0] for a in anchors]
  rng = np.random.default_rng(0)
  obj = [rng.normal(size=(args.batch, n)).astype(np.float32) for n in sizes]
  dl = [(0.2 * rng.normal(size=(args.batch, n, 4))).astype(np.float32) for n in sizes]

  fn = jax.jit(jax.vmap(lambda o, d: generate_proposals(o, d, anchors, hw, pre, 0.7, post)))
  jo, jd = jax.device_put(obj), jax.device_put(dl)
  t_jax = median_seconds(lambda: jax.block_until_ready(fn(jo, jd)), args.repeats, warmup=True)

  dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  net = tv_rpn.RegionProposalNetwork(
      AnchorGenerator(), None, 0.7, 0.3, 256, 0.5,
      pre_nms_top_n=dict(training=pre, testing=pre), post_nms_top_n=dict(training=post, testing=post),
      nms_thresh=0.7).eval()
  t_obj = torch.from_numpy(np.concatenate(obj, 1)).to(dev)
  t_dl = torch.from_numpy(np.concatenate(dl, 1)).to(dev).reshape(-1, 4)
  t_anc = torch.from_numpy(np.concatenate(anchors)).to(dev)

  def tv():
    with torch.no_grad():
      props = net.box_coder.decode(t_dl, [t_anc] * args.batch).view(args.batch, -1, 4)
      out, _ = net.filter_proposals(props, t_obj.reshape(-1, 1), [hw] * args.batch, sizes)
      if dev.type == 'cuda':
        torch.cuda.synchronize()
      return out
  t_tv = median_seconds(tv, args.repeats, warmup=True)
  print(f'anchors per level {sizes}, batch {args.batch}, pre {pre}, post {post}, NMS 0.7')
  print(f'zsi_jax generate_proposals ({jax.devices()[0].platform}, jit+vmap): {t_jax * 1e3:.1f} ms')
  print(f'torchvision decode+filter_proposals ({dev.type}): {t_tv * 1e3:.1f} ms')


if __name__ == '__main__':
  main()
