"""Writes the TFDS array_record dataset of a prepared dataset root, for data.pipeline='grain'.

python data_prep/make_tfds.py --root DATASET_ROOT --out TFDS_DIR [--splits train,val,test_zsi,test_gzsi]

DATASET_ROOT is ZSI-Shapes (data_prep/make_shapes.py) or a COCO split made by
data_prep/make_coco_splits.py; either may be a bucket URL (gs://...), and so
may TFDS_DIR (the dataset is then written locally and uploaded). By default
every split whose annotation file DATASET_ROOT/annotations/<split>.json exists
is built (ZSI-Shapes: all four; COCO: train, test_zsi, test_gzsi), so training
and evaluation both find theirs. Each split's classes are the ZSI setting's
(train and val: seen; test_zsi: unseen; test_gzsi: all); annotations that are
skipped (other categories, degenerate boxes) are counted in the dataset's
metadata and printed. Then train with
  --config.data.pipeline=grain --config.data.tfds_dir=TFDS_DIR
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsi_jax import cli, storage  # noqa: E402
from zsi_jax.data import tfds_coco  # noqa: E402

SPLITS = ('train', 'val', 'test_zsi', 'test_gzsi')


def present_splits(root):
  """The standard splits whose annotation files exist under ``root``, in the standard order."""
  found = [s for s in SPLITS if storage.exists(storage.join(root, 'annotations', f'{s}.json'))]
  if not found:
    names = ', '.join(f'{s}.json' for s in SPLITS)
    raise FileNotFoundError(f'{root}/annotations/ has none of {names}: make the dataset first '
                            '(data_prep/make_coco_splits.py or data_prep/make_shapes.py), or '
                            'name its splits with --splits')
  return found


def _built_splits(out):
  """Splits of the dataset already at ``out`` (none if there is none)."""
  try:
    return sorted(tfds_coco.open_builder(out).info.splits.keys())
  except FileNotFoundError:
    return []


def main():
  p = cli.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--root', required=True, help='a prepared dataset root (with split.json)')
  p.add_argument('--out', required=True, help='the TFDS data dir to write')
  p.add_argument('--splits', default='',
                 help='comma-separated annotation splits (default: those in ROOT/annotations/, '
                 f'of {",".join(SPLITS)})')
  p.add_argument('--overwrite', action='store_true', help='rebuild an existing dataset')
  a = p.parse_args()
  splits = [s for s in a.splits.split(',') if s] or present_splits(a.root)
  missing = [s for s in splits
             if not storage.exists(storage.join(a.root, 'annotations', f'{s}.json'))]
  if missing:
    raise FileNotFoundError(f'{a.root}/annotations/ has no {", ".join(missing)} '
                            f'(.json); choose --splits from what it has')
  built = _built_splits(a.out)
  lacking = [s for s in splits if s not in built]
  if built and lacking and not a.overwrite:
    raise FileExistsError(f'{a.out} holds a dataset of splits {", ".join(built)} without '
                          f'{", ".join(lacking)}: add --overwrite to rebuild it')
  t = time.time()
  # One progress bar per split while it writes; a dataset built from another
  # version of the source is refused (without --overwrite).
  tfds_coco.build(a.root, splits, a.out, overwrite=a.overwrite)
  for split in splits:
    meta = tfds_coco.split_metadata(a.out, split)
    print(f'{split}: {meta["images"]} images; skipped annotations: {meta["skipped"]}')
  done = (f'{a.out} was already built from this source (same annotation files and image '
          'sizes): kept' if set(splits) <= set(built) and not a.overwrite else
          f'wrote {a.out} in {time.time() - t:.1f} s')
  print(f'{done}; train with --config.data.pipeline=grain --config.data.tfds_dir={a.out}')


if __name__ == '__main__':
  cli.main(lambda _: main())(None)
