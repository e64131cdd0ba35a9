"""The authors' COCO 2014 training recipe (REFERENCE.md, "Settings"), shared by
configs/coco_48_17.py and configs/coco_65_15.py; each split's file sets what
differs (data root, learning rate, warm-up)."""
import ml_collections

from zsi_jax.config_defaults import model_config


def coco_config(split: str, learning_rate: float, warmup_steps: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(
      root=f'data/coco/zsi_{split}',       # written by data_prep/make_coco_splits.py
      vectors='class_vectors.txt',         # the authors' word2vec vectors of the split
      # Keep-ratio resize to short <= 800, long <= 1333, padded to one fixed
      # square canvas so every batch has the same static shape (portrait and
      # landscape images both fit; 1344 is a multiple of the FPN's 64).
      image_size=(1344, 1344),
      scale=(800, 1333),
      max_instances=100,                   # more per image are counted and reported
      mask_gt_size=56,
      batch_size=8,                        # global: 8 images (authors: 4 GPUs x 2)
      num_workers=8,
      max_classes=0,                       # 0: the split's class count
  )
  c.model = model_config()                 # R101-FPN, BA-RPN, decoders, Sync-bg
  c.init = dict(
      # torchvision ImageNet ResNet-101 weights (.pth, or .npz/.safetensors without
      # torch), e.g. resnet101-63fe2227.pth; required for the paper's numbers.
      backbone='',
  )
  c.optim = dict(learning_rate=learning_rate, momentum=0.9, weight_decay=1e-4, clip_norm=35.0,
                 warmup_steps=warmup_steps, warmup_ratio=1.0 / 3, decay_epochs=(8, 11),
                 decay_factor=0.1,
                 # learning_rate is that of 8 images; other global batches
                 # (--config.data.batch_size=2*devices) scale it linearly.
                 reference_batch=8)
  c.num_epochs = 12
  c.total_steps = 0                        # > 0 overrides num_epochs (schedule stretched)
  c.log_every = 50
  c.checkpoint_every = 2000
  c.keep_checkpoints = 3
  c.eval_every = 0                         # > 0: seen-class eval on data.eval_images val images
  c.eval_images = 500
  return c
