"""Every default setting, in one place.

``base_config()`` is the whole experiment config with the authors' COCO model
(docs/REFERENCE_NOTES.md); the files in configs/ start from it and override
what differs. ``config_check.validate`` accepts exactly its keys, and a config
saved with an older checkpoint is completed from it when read back. Nothing
here depends on the dataset's class count (that comes from the vector file).
"""
from __future__ import annotations

import ml_collections


def model_config() -> ml_collections.ConfigDict:
  """The authors' COCO model (R101-FPN, BA-RPN, both decoders, Sync-bg)."""
  c = ml_collections.ConfigDict()
  c.dtype = 'float32'                 # 'bfloat16': bf16 compute, f32 params and losses
  # How convolutions are computed; the same parameters and function either
  # way (modeling/build.py): 'auto' picks per backend and per training or
  # inference, 'conv' is XLA's convolution everywhere, 'winograd' forces
  # the CPU's Winograd F(4x4, 3x3) form.
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
  # RoIAlign form (ops/roi_align.py; the same values and gradients): 'per_tap'
  # never holds every sampling tap at once (less memory, faster), 'gather' does.
  c.roi_align_form = 'per_tap'
  c.box_head = dict(fc_dim=1024, use_decoder=True, regression='class_agnostic',
                    vocabulary_size=0, smooth_l1_beta=1.0, recon_weight=0.5)
  c.mask_head = dict(num_convs=4, channels=256, encoder='1x1', use_decoder=True, roi_size=14,
                     recon_weight=0.5, max_rois_per_image=128,
                     # > 1: the loss runs on the smallest of this many slot buckets
                     # (cap, cap/2, ...) that holds the batch's positives
                     # (modeling/buckets.py); the same loss, less work.
                     roi_buckets=4,
                     # > 0: a bucket's loss runs in pieces of at most this many
                     # slots per image, one at a time, so its peak memory is a
                     # piece's (the same loss); 0: the whole bucket at once.
                     # 16 and 32 run equally fast at equal work, 16 in less
                     # memory (benchmarks/bench_mask_loss.py).
                     loss_piece_slots=16,
                     # True: pieces beyond the most positives of any image are
                     # not run; False: every piece of the bucket runs (a fixed
                     # mask-head cost per step, for benchmarks at equal work).
                     skip_empty_pieces=True,
                     # Touching objects (docs/RESULTS.md, "Masks of touching
                     # objects"): add a class-agnostic per-pixel logit to the
                     # semantic one; weight the BCE of RoI pixels on another
                     # object by this much (1: plain background).
                     instance_logit=False, neighbour_weight=1.0)
  # Sync-bg: which heads use the learned v_b, and whether their losses train it
  # (paper: yes; the authors' code detaches it).
  c.sync_bg = dict(det=True, mask=True, gradients=True)
  c.test = dict(score_threshold=0.05, nms_threshold=0.5, max_detections=100, pre_nms_topk=1000,
                mask_threshold=0.5, scoring='direct',
                # GZSI calibrated stacking: seen-class scores lowered by this much
                # before the threshold, NMS and top-k (ClassSpace.calibrate).
                seen_calibration=0.0)
  return c


def base_config() -> ml_collections.ConfigDict:
  """The whole experiment config: data, model, optimiser, schedule, logging."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(
      root='',                             # a dataset root written by data_prep/
      vectors='class_vectors.txt',         # class-vector file inside it (authors' format)
      image_size=(1344, 1344),             # the padded canvas [H, W] of every batch
      scale=(800, 1333),                   # keep-ratio resize limits (short, long)
      max_instances=100,                   # per image; more are counted and reported
      mask_gt_size=56,                     # ground-truth masks cropped to their box at M x M
      batch_size=8,                        # global, over all devices and processes
      # How batches are read: 'threads' (a thread pool over the COCO files of
      # data.root) or 'grain' (the TFDS array_record dataset in data.tfds_dir,
      # written by data_prep/make_tfds.py, with data.workers worker processes).
      pipeline='threads',
      tfds_dir='',
      threads=2,                           # decoding threads (per worker process under grain)
      workers=0,                           # grain worker processes (0: decode in the trainer)
      max_classes=0,                       # rows of the padded class matrix; 0: the split's
      # A fixed vocabulary for the box head's projection (the authors' COCO
      # recipe): a file in data.root (D rows x V columns, as
      # make_word_vectors.py --vocab_out writes it); needs
      # model.box_head.vocabulary_size = V. '': none.
      vocabulary='',
  )
  c.model = model_config()
  # torchvision ImageNet ResNet weights (.pth, or .npz/.safetensors without
  # torch), e.g. resnet101-63fe2227.pth; '' trains the backbone from scratch.
  c.init = dict(backbone='')
  c.optim = dict(
      learning_rate=0.01, momentum=0.9, weight_decay=1e-4, clip_norm=35.0,
      warmup_steps=500, warmup_ratio=1.0 / 3, decay_epochs=(8, 11), decay_factor=0.1,
      # > 0: learning_rate is that of this global batch and scales linearly
      # with data.batch_size.
      reference_batch=0,
      # > 0: both reconstruction weights ramp in linearly over this many steps.
      recon_warmup_steps=0)
  c.num_epochs = 12
  c.total_steps = 0                        # > 0 overrides num_epochs (schedule stretched)
  c.log_every = 50
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.eval_every = 0                         # > 0: seen-class eval on the 'val' split every N steps
  c.eval_images = 500                      # ... on its first N images (0: all)
  return c
