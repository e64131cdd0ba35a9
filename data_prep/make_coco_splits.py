"""COCO 2014 -> zero-shot train / ZSI test / GZSI test annotation files.

python data_prep/make_coco_splits.py --coco_root DIR --split 48_17|65_15|custom.json [--out DIR]
Reads DIR/annotations/instances_{train,val}2014.json and writes, under --out
(default DIR/zsi_<split>): annotations/{train,test_zsi,test_gzsi}.json, split.json and the
shipped word2vec class-vector file of the split (custom splits: pass --vectors).
Training images are read from --train_images (default DIR/train2014), test images
from --val_images (default DIR/val2014); split.json records both. Prints the
counts and the next commands (make_tfds.py, train.py) for the folder it wrote.
"""
import json
import os
import shlex
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsi_jax import cli  # noqa: E402
from zsi_jax.data import splits  # noqa: E402
from zsi_jax.jsonio import read_json  # noqa: E402

ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      'zsi_jax', 'assets', 'coco_zsi')


def main(argv=None):
  p = cli.ArgumentParser(description=__doc__)
  p.add_argument('--coco_root', required=True)
  p.add_argument('--split', required=True)
  p.add_argument('--out')
  p.add_argument('--train_json', default='annotations/instances_train2014.json')
  p.add_argument('--val_json', default='annotations/instances_val2014.json')
  p.add_argument('--train_images', default='train2014')
  p.add_argument('--val_images', default='val2014')
  p.add_argument('--vectors', help='class-vector file (authors\' format) for a custom split')
  a = p.parse_args(argv)
  name, seen, unseen = splits.get_split(a.split)
  out = a.out or os.path.join(a.coco_root, f'zsi_{name}')
  # Checked before anything is read or written.
  vec_src = a.vectors or os.path.join(ASSETS, f'word_w2v_withbg_{name}.txt')
  if not os.path.exists(vec_src):
    raise FileNotFoundError(
        f'{a.vectors or a.split}: no class-vector file' + (
            '' if a.vectors else f' ships for split {name!r}; make one with python '
            f'data_prep/make_word_vectors.py --vectors GoogleNews-vectors-negative300.bin '
            f'--classes {a.split} --out {name}_vectors.txt and pass --vectors {name}_vectors.txt'))
  train = read_json(os.path.join(a.coco_root, a.train_json), 'COCO annotation file')
  val = read_json(os.path.join(a.coco_root, a.val_json), 'COCO annotation file')
  tr, zsi, gzsi, counts = splits.make_zero_shot_splits(train, val, seen, unseen,
                                                       (a.train_json, a.val_json))
  os.makedirs(os.path.join(out, 'annotations'), exist_ok=True)
  for fname, d in (('train', tr), ('test_zsi', zsi), ('test_gzsi', gzsi)):
    with open(os.path.join(out, 'annotations', f'{fname}.json'), 'w') as f:
      json.dump(d, f)
  shutil.copy(vec_src, os.path.join(out, 'class_vectors.txt'))
  cat_ids = {c['name']: c['id'] for c in gzsi['categories']}
  with open(os.path.join(out, 'split.json'), 'w') as f:
    json.dump(dict(name=name, seen=seen, unseen=unseen, category_ids=cat_ids,
                   vectors={'semantic': 'class_vectors.txt'},
                   image_dirs={'train': os.path.abspath(os.path.join(a.coco_root, a.train_images)),
                               'test': os.path.abspath(os.path.join(a.coco_root, a.val_images))}),
              f, indent=1)
  for k, v in counts.items():
    print(f'{k}: {v}')
  # The built-in splits have their config; a custom split trains with the 65/15 recipe.
  config = f'configs/coco_{name}.py' if name in splits.BUILTIN else 'configs/coco_65_15.py'
  root, tfds_dir = shlex.quote(out), shlex.quote(out + '_tfds')
  print(f'wrote {out}; next:\n'
        f'  python data_prep/make_tfds.py --root {root} --out {tfds_dir}\n'
        f'  python train.py --config {config} --workdir runs/coco_{name} '
        f'--config.data.root={root} --config.data.tfds_dir={tfds_dir}')
  return counts


if __name__ == '__main__':
  cli.main(lambda _: main())(None)
