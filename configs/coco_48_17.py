"""COCO 2014, 48 seen / 17 unseen classes, the authors' settings (docs/REFERENCE_NOTES.md).

python data_prep/make_coco_splits.py --coco_root COCO --split 48_17 --out data/coco/zsi_48_17
python data_prep/make_tfds.py --root data/coco/zsi_48_17 --out data/coco/zsi_48_17_tfds
python train.py --config configs/coco_48_17.py --workdir runs/coco_48_17 \
    --config.init.backbone=resnet101-63fe2227.pth
"""
from configs.coco_common import coco_config


def get_config():
  # lr 0.01 with a 500-iteration linear warm-up from 1/3 (batch 8).
  return coco_config('48_17', learning_rate=0.01, warmup_steps=500)
