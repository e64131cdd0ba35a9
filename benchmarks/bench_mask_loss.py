"""The mask loss alone at equal work: one slot count, several piece sizes.

python benchmarks/bench_mask_loss.py [--positives 64,128] [--pieces 16,32,64] [--reps 5]

``bench_step.py`` cannot hold the mask-head work fixed: the slots that run
follow the positives its sampler happens to draw. Here every image holds
exactly ``P`` positive RoIs, so every piece size runs the same ``P`` slots per
image and only the way the work is cut differs. The COCO R50-FPN mask head
(4 convs, deconvolution, semantic encoder and decoder, 300-d vectors) on
P2-P5 of a 512x512 batch of 2, one bucket of 128 slots
(``model.mask_head.roi_buckets=1``), with the train step's gradients (with
respect to the parameters, the features and the class matrix). Prints, per
(P, piece size): the median time of the loss and its gradients over
``--reps`` calls (the configurations alternating within each repetition),
its min-max, and XLA's temporary arena for the call.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_step import MASK_GT, NUM_GT, synthetic_instances  # noqa: E402

HW = 512
BATCH = 2
ROIS = 512            # sampled RoIs per image


def main():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--positives', default='64,128', help='positive RoIs per image (each <= 128)')
  p.add_argument('--pieces', default='16,32,64',
                 help='loss_piece_slots values (0: the bucket whole, all 128 slots)')
  p.add_argument('--reps', type=int, default=5)
  args = p.parse_args()

  import jax
  import jax.numpy as jnp
  from configs.coco_common import coco_config
  from zsi_jax import host
  from zsi_jax.modeling.build import build_model
  from zsi_jax.modeling.mask_head import SemanticMaskHead
  host.release_heap_after_compiles()

  c = coco_config('65_15', learning_rate=0.01, warmup_steps=100)
  c.model.mask_head.roi_buckets = 1
  rng = np.random.default_rng(0)
  dim = 300
  head = build_model(c.model, np.zeros(dim, np.float32), 65, training=True).mask_head
  channels = c.model.fpn_channels
  features = [jnp.asarray(rng.normal(size=(BATCH, HW // s, HW // s, channels)), jnp.float32)
              for s in (4, 8, 16, 32)]
  class_matrix = jnp.asarray(rng.normal(size=(66, dim)) / np.sqrt(dim), jnp.float32)
  # bench_step's ground-truth boxes (masks: all ones), the RoIs jittered around them.
  gt_boxes = synthetic_instances(rng, BATCH, (HW, HW))[0]
  matched = rng.integers(0, NUM_GT, (BATCH, ROIS))
  rois = np.take_along_axis(gt_boxes, matched[..., None], 1)
  rois = np.clip(rois + rng.normal(scale=8.0, size=rois.shape), 0, HW - 1).astype(np.float32)
  rois[..., 2:] = np.maximum(rois[..., 2:], rois[..., :2] + 4)
  batch = dict(gt_boxes=jnp.asarray(gt_boxes),
               gt_masks=jnp.ones((BATCH, NUM_GT, MASK_GT, MASK_GT), jnp.uint8))
  variables = head.init(jax.random.PRNGKey(0), jnp.zeros((1, 14, 14, channels)),
                        jnp.zeros((1, 1, dim)), residual=True)

  def loss_and_grads(module):
    def loss(params, features, class_matrix, roi_set):
      value, _, _ = module.apply({'params': params}, features, roi_set, batch, class_matrix,
                                 method=SemanticMaskHead.losses)
      return value
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))

  configs = []
  for positives in (int(v) for v in args.positives.split(',')):
    labels = np.zeros((BATCH, ROIS), np.int32)
    labels[:, :positives] = rng.integers(1, 66, (BATCH, positives))
    roi_set = dict(rois=jnp.asarray(rois), labels=jnp.asarray(labels),
                   valid=jnp.ones((BATCH, ROIS), bool), matched_gt=jnp.asarray(matched, jnp.int32))
    for piece in (int(v) for v in args.pieces.split(',')):
      call_args = (variables['params'], features, class_matrix, roi_set)
      fn = loss_and_grads(head.clone(loss_piece_slots=piece)).lower(*call_args).compile()
      arena = fn.memory_analysis().temp_size_in_bytes / 2**20
      jax.block_until_ready(fn(*call_args))           # warm-up
      configs.append(dict(positives=positives, piece=piece, fn=fn, args=call_args,
                          arena=arena, times=[]))
  for _ in range(args.reps):
    for cfg in configs:
      t = time.perf_counter()
      jax.block_until_ready(cfg['fn'](*cfg['args']))
      cfg['times'].append(time.perf_counter() - t)

  machine = host.describe()
  print(f"host: {host.short_name(machine)}, {machine['cores']} cores; "
        f'{args.reps} alternating repetitions')
  print(f"{'positives/image':>16} {'piece slots':>12} {'loss+grads (s)':>15} {'min-max':>13} "
        f"{'XLA arena (MiB)':>16}")
  for cfg in configs:
    t = np.asarray(cfg['times'])
    print(f"{cfg['positives']:>16} {cfg['piece'] or 'whole':>12} {np.median(t):>15.3f} "
          f"{t.min():>6.3f}-{t.max():<6.3f} {cfg['arena']:>16.0f}")


if __name__ == '__main__':
  main()
