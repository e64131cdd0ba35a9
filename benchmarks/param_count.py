"""Parameter counts of the COCO ZSI models beside torchvision's Mask R-CNN R50-FPN.

python benchmarks/param_count.py
Counts are by module (backbone, fpn, rpn, box_head, mask_head); the ZSI model
uses D=300 word vectors and the authors' class-specific box regression over
the split's seen classes. Shapes only (jax.eval_shape): nothing is computed.
"""
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsi_jax.config_defaults import model_config  # noqa: E402
from zsi_jax.modeling.build import build_model, init_variables  # noqa: E402


def zsi_counts(depth: int, num_seen: int, dim: int = 300, regression='class_specific'):
  c = model_config()
  c.backbone.depth = depth
  c.box_head.regression = regression
  model = build_model(c, [0.0] * dim, num_seen, training=True)
  shapes = jax.eval_shape(lambda k: init_variables(model, k, (256, 256)), jax.random.PRNGKey(0))
  return {name: sum(int(np.prod(l.shape)) for l in jax.tree_util.tree_leaves(sub))
          for name, sub in shapes['params'].items()}


def torchvision_counts(num_classes: int):
  import torchvision
  m = torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                         num_classes=num_classes)
  groups = {'backbone': m.backbone.body, 'fpn': m.backbone.fpn, 'rpn': m.rpn,
            'box_head': m.roi_heads.box_head, 'box_predictor': m.roi_heads.box_predictor,
            'mask_head': m.roi_heads.mask_head, 'mask_predictor': m.roi_heads.mask_predictor}
  return {k: sum(p.numel() for p in v.parameters()) for k, v in groups.items()}


def main():
  rows = []
  for depth in (50, 101):
    for split, seen in (('48/17', 48), ('65/15', 65)):
      counts = zsi_counts(depth, seen)
      rows.append((f'ZSI R{depth}-FPN, {split} (D=300, class-specific reg.)', counts))
  try:
    rows.append(('torchvision maskrcnn_resnet50_fpn (81 classes)', torchvision_counts(81)))
  except ImportError:
    print('torchvision not installed: its row is skipped')
  for name, counts in rows:
    total = sum(counts.values())
    parts = ', '.join(f'{k} {v / 1e6:.2f}M' for k, v in counts.items())
    print(f'{name}: {total / 1e6:.2f}M  ({parts})')


if __name__ == '__main__':
  main()
