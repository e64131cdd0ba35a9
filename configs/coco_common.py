"""The authors' COCO 2014 training recipe (docs/REFERENCE_NOTES.md, "Settings"),
shared by configs/coco_48_17.py and configs/coco_65_15.py; each split's file
sets what differs (data root, learning rate, warm-up)."""
import ml_collections

from zsi_jax.config_defaults import base_config


def coco_config(split: str, learning_rate: float, warmup_steps: int) -> ml_collections.ConfigDict:
  c = base_config()                        # R101-FPN, BA-RPN, decoders, Sync-bg
  c.data.root = f'data/coco/zsi_{split}'   # written by data_prep/make_coco_splits.py
  # Keep-ratio resize to short <= 800, long <= 1333, padded to one fixed square
  # canvas so every batch has the same static shape (portrait and landscape
  # images both fit; 1344 is a multiple of the FPN's 64).
  c.data.image_size = (1344, 1344)
  c.data.scale = (800, 1333)
  c.data.batch_size = 8                    # global: 8 images (authors: 4 GPUs x 2)
  # Grain worker processes decode in parallel past the GIL (docs/DATA.md, "Input
  # pipelines"); build the dataset with data_prep/make_tfds.py first.
  c.data.pipeline = 'grain'
  c.data.tfds_dir = f'data/coco/zsi_{split}_tfds'
  c.data.workers = 8
  c.optim.learning_rate = learning_rate
  c.optim.warmup_steps = warmup_steps
  # learning_rate is that of 8 images; other global batches
  # (--config.data.batch_size=2*devices) scale it linearly.
  c.optim.reference_batch = 8
  c.num_epochs = 12
  # The authors' optional vocabulary projection in the box head (off, as in
  # their default): make the matrix from the GoogleNews vectors with
  #   python data_prep/make_word_vectors.py --vectors GoogleNews-vectors-negative300.bin \
  #     --classes SPLIT --out /tmp/unused.txt \
  #     --vocabulary zsi_jax/assets/pl_zsd/vocabulary_list.txt --vocab_out DATA_ROOT/vocabulary.txt
  # and train with --config.data.vocabulary=vocabulary.txt
  # --config.model.box_head.vocabulary_size=V (V: the words found, printed).
  return c
