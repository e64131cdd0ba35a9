"""A tiny configuration for tests: a few-layer ResNet, 64x64 images, few RoIs."""
from configs import shapes


def get_config():
  c = shapes.get_config()
  c.data.image_size = (64, 64)
  c.data.scale = (64, 64)
  c.data.batch_size = 2
  c.data.max_instances = 4
  c.data.mask_gt_size = 28
  m = c.model
  m.backbone = dict(depth=18, width=0.125, norm='group_norm', frozen_stages=0)
  m.fpn_channels = 16
  m.anchors.scales = (4.0,)
  for k in ('pre_nms_topk_train', 'post_nms_topk_train', 'pre_nms_topk_test', 'post_nms_topk_test'):
    m.rpn[k] = 64
  m.rpn.targets.num_samples = 64
  m.roi_sampling.num_samples = 16
  m.mask_head.max_rois_per_image = 4
  m.mask_head.channels = 16
  m.mask_head.num_convs = 2
  # One slot bucket: each bucket is a compiled branch of every train step, and
  # only tests/modeling/test_zsi.py checks the buckets.
  m.mask_head.roi_buckets = 1
  m.box_head.fc_dim = 32
  m.test.max_detections = 10
  m.test.pre_nms_topk = 64
  c.num_epochs = 1
  c.total_steps = 0   # the length comes from num_epochs (or --config.total_steps)
  c.log_every = 1
  c.checkpoint_every = 2
  return c
