"""COCO 2014, 65 seen / 15 unseen classes, the authors' settings (docs/REFERENCE_NOTES.md).

python data_prep/make_coco_splits.py --coco_root COCO --split 65_15 --out data/coco/zsi_65_15
python data_prep/make_tfds.py --root data/coco/zsi_65_15 --out data/coco/zsi_65_15_tfds
python train.py --config configs/coco_65_15.py --workdir runs/coco_65_15 \
    --config.init.backbone=resnet101-63fe2227.pth
"""
from configs.coco_common import coco_config


def get_config():
  # lr 0.0075 with a 7000-iteration linear warm-up from 1/3 (batch 8).
  return coco_config('65_15', learning_rate=0.0075, warmup_steps=7000)
