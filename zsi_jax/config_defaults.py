"""Default model settings (REFERENCE.md), shared by the experiment configs.

Experiment files in configs/ start from :func:`model_config` and override what
differs; nothing here depends on the dataset's class count (that comes from the
class-vector file).
"""
from __future__ import annotations

import ml_collections


def model_config() -> ml_collections.ConfigDict:
  """The authors' COCO model (R101-FPN, BA-RPN, both decoders, Sync-bg)."""
  c = ml_collections.ConfigDict()
  c.dtype = 'float32'                 # 'bfloat16': bf16 compute, f32 params and losses
  # How the 3x3 convolutions of the FPN, RPN, mask head and backbone (those
  # of stride 1) and all 1x1 convolutions run: 'auto' ('winograd' on the CPU:
  # Winograd F(4x4, 3x3) for all but small 3x3 convolutions, which are
  # 'mixed', and 1x1 matmuls; 'conv' elsewhere), 'conv', 'gemm',
  # 'mixed' or 'winograd' (modeling/layers.Conv3x3, Conv1x1; the same
  # parameters either way).
  c.conv_impl = 'auto'
  c.backbone = dict(depth=101, width=1.0, norm='frozen_bn', frozen_stages=1)
  c.fpn_channels = 256
  c.anchors = dict(strides=(4, 8, 16, 32, 64), scales=(8.0,), ratios=(0.5, 1.0, 2.0))
  c.rpn = dict(
      semantic=True,                  # False: plain RPN (Table 5 "RPN")
      pre_nms_topk_train=2000, post_nms_topk_train=2000,
      pre_nms_topk_test=1000, post_nms_topk_test=1000,
      nms_threshold=0.7, min_size=0.0, smooth_l1_beta=1.0 / 9,
      targets=dict(positive_threshold=0.7, negative_threshold=0.3, allow_low_quality=True,
                   low_quality_min=0.3, num_samples=256, positive_fraction=0.5),
  )
  c.roi_sampling = dict(positive_threshold=0.5, negative_threshold=0.5, num_samples=512,
                        positive_fraction=0.25)
  c.roi_align_sampling_ratio = 2
  c.box_head = dict(fc_dim=1024, use_decoder=True, regression='class_agnostic',
                    vocabulary_size=0, smooth_l1_beta=1.0, recon_weight=0.5)
  c.mask_head = dict(num_convs=4, channels=256, encoder='1x1', use_decoder=True, roi_size=14,
                     mask_size=28, recon_weight=0.5, max_rois_per_image=128,
                     # > 1: run on the smallest of this many slot buckets (cap, cap/2, ...)
                     # that holds the batch's positives; see modeling/zsi.mask_roi_buckets.
                     roi_buckets=4,
                     # With buckets, compute the mask loss's gradients inside the taken
                     # bucket (ZSIModel._fused_mask_loss): no second forward pass; the
                     # mask terms are then differentiable only through 'total'.
                     fused_backward=True)
  # Sync-bg: which heads use the learned v_b, and whether their losses train it
  # (paper: yes; the authors' code detaches it).
  c.sync_bg = dict(det=True, mask=True, gradients=True)
  c.test = dict(score_threshold=0.05, nms_threshold=0.5, max_detections=100, pre_nms_topk=1000,
                mask_threshold=0.5, scoring='direct')
  return c
