"""COCO zero-shot splits on real annotations (coco_sample) and generated edge cases."""
import json
import os

import numpy as np
import pytest
from pycocotools.coco import COCO

from zsi_jax.data import datasets, splits
from zsi_jax.data import input_pipeline as ip
from data_prep import make_coco_splits

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'instances_val2017_sample.json')


def test_builtin_splits_match_reference_sizes_and_order():
  for name, (s, u) in (('48_17', (48, 17)), ('65_15', (65, 15))):
    _, seen, unseen = splits.get_split(name)
    assert (len(seen), len(unseen)) == (s, u)
    assert not set(seen) & set(unseen)
    assert set(seen + unseen) <= set(splits.COCO_CLASSES)
  _, seen, unseen = splits.get_split('65_15')
  # The shipped class names file lists 65 seen then 15 unseen, in this order.
  names = [l.split(',')[0] for l in open('zsi_jax/assets/pl_zsd/cls_names_test_coco.csv')]
  assert names == seen + unseen


def test_shipped_vectors_load_in_split_order():
  for name in ('48_17', '65_15'):
    _, seen, unseen = splits.get_split(name)
    v, bg = datasets.read_vector_file(f'zsi_jax/assets/coco_zsi/word_w2v_withbg_{name}.txt',
                                      len(seen) + len(unseen))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 0.7666, atol=2e-3)
    # The background starts as the mean of all 80 COCO class vectors (norm 0.3236),
    # in 48/17 too, where only 65 of them are in the file.
    np.testing.assert_allclose(np.linalg.norm(bg), 0.3236, atol=1e-3)
    if name == '65_15':
      np.testing.assert_allclose(bg, v.mean(0), atol=1e-5)
  with pytest.raises(ValueError, match='columns'):
    datasets.read_vector_file('zsi_jax/assets/coco_zsi/word_w2v_withbg_48_17.txt', 80)


def _coco_root(tmp_path, train, val):
  os.makedirs(tmp_path / 'annotations')
  (tmp_path / 'annotations' / 'instances_train2014.json').write_text(json.dumps(train))
  (tmp_path / 'annotations' / 'instances_val2014.json').write_text(json.dumps(val))
  return tmp_path


def test_real_sample_against_pycocotools(tmp_path):
  data = json.load(open(FIXTURE))
  root = _coco_root(tmp_path, data, data)
  counts = make_coco_splits.main(['--coco-root', str(root), '--split', '48_17'])
  out = root / 'zsi_48_17'
  coco = COCO(FIXTURE)
  _, seen, unseen = splits.get_split('48_17')
  ids = lambda names: coco.getCatIds(catNms=names)
  seen_ids, unseen_ids = set(ids(seen)), set(ids(unseen))
  exp_train, exp_test = [], []
  for img in coco.getImgIds():
    cats = {a['category_id'] for a in coco.loadAnns(coco.getAnnIds(imgIds=[img]))}
    if cats & seen_ids and not cats & unseen_ids:
      exp_train.append(img)
    if cats & unseen_ids:
      exp_test.append(img)
  tr = json.load(open(out / 'annotations' / 'train.json'))
  zsi = json.load(open(out / 'annotations' / 'test_zsi.json'))
  gzsi = json.load(open(out / 'annotations' / 'test_gzsi.json'))
  assert sorted(im['id'] for im in tr['images']) == sorted(exp_train)
  assert sorted(im['id'] for im in zsi['images']) == sorted(exp_test)
  assert all(a['category_id'] in unseen_ids for a in zsi['annotations'])
  n_gzsi = sum(1 for a in coco.dataset['annotations']
               if a['image_id'] in exp_test and a['category_id'] in seen_ids | unseen_ids)
  assert len(gzsi['annotations']) == n_gzsi == counts['test_gzsi']['instances']
  assert [c['name'] for c in gzsi['categories']] == seen + unseen
  info = datasets.load_dataset(str(out))
  assert info.vectors.shape == (65, 300)
  # The crowd RLE annotation (a car) survives as crowd in the loader.
  recs, skipped = ip.load_coco(str(out / 'annotations' / 'test_gzsi.json'), str(tmp_path),
                               info.cat_ids(seen + unseen))
  crowd = [a for r in recs for a in r['anns'] if a['crowd']]
  if 900300255917 in {a['id'] for a in gzsi['annotations']}:
    assert len(crowd) == 1


def test_generated_edge_cases(tmp_path):
  cats = [{'id': 1, 'name': 'cat'}, {'id': 2, 'name': 'dog'}, {'id': 3, 'name': 'cow'}]
  poly = [[10, 10, 30, 10, 30, 30, 10, 30]]
  multi = poly + [[40, 40, 50, 40, 50, 50]]
  rle = {'size': [60, 60], 'counts': [100, 20, 3480]}
  images = [{'id': i, 'file_name': f'{i}.png', 'height': 60, 'width': 60} for i in range(1, 6)]
  anns = [
      dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 20, 20], segmentation=poly, iscrowd=0),
      dict(id=2, image_id=2, category_id=2, bbox=[10, 10, 40, 40], segmentation=multi, iscrowd=0),
      dict(id=3, image_id=2, category_id=1, bbox=[0, 0, 60, 60], segmentation=rle, iscrowd=1),
      dict(id=4, image_id=3, category_id=3, bbox=[10, 10, 20, 20], segmentation=poly, iscrowd=0),
      dict(id=5, image_id=4, category_id=1, bbox=[10, 10, 20, 20], segmentation=poly, iscrowd=0),
      dict(id=6, image_id=4, category_id=3, bbox=[10, 10, 20, 20], segmentation=poly, iscrowd=0),
  ]  # image 5 has no annotation; 'cow' is outside the split
  d = dict(images=images, annotations=anns, categories=cats)
  (tmp_path / 'custom.json').write_text(json.dumps({'name': 'pets', 'seen': ['cat'],
                                                    'unseen': ['dog']}))
  root = _coco_root(tmp_path / 'coco', d, d)
  counts = make_coco_splits.main(['--coco-root', str(root), '--split', str(tmp_path / 'custom.json'),
                                  '--vectors', 'zsi_jax/assets/coco_zsi/word_w2v_withbg_48_17.txt'])
  # Train: images 1 and 4 (cat, no dog); the cow of image 4 is dropped and counted.
  assert counts['train'] == dict(images=2, instances=2, other_classes_dropped=1)
  assert counts['test_zsi'] == dict(images=1, instances=1)
  assert counts['test_gzsi']['instances'] == 2   # dog + crowd cat
  with pytest.raises(ValueError, match='both seen and unseen'):
    (tmp_path / 'bad.json').write_text(json.dumps({'seen': ['cat'], 'unseen': ['cat']}))
    splits.get_split(str(tmp_path / 'bad.json'))
  with pytest.raises(ValueError, match='not among its categories'):
    splits.make_zero_shot_splits(d, d, ['cat'], ['horse'])
  # Masks of polygons, multi-polygons and crowd RLE decode to the right areas.
  assert ip.decode_mask(poly, 60, 60, 'x').sum() == pytest.approx(400, abs=45)
  assert ip.decode_mask(multi, 60, 60, 'x').sum() > ip.decode_mask(poly, 60, 60, 'x').sum()
  assert ip.decode_mask(rle, 60, 60, 'x').sum() == 20
  with pytest.raises(ValueError, match='degenerate polygon'):
    ip.decode_mask([[1, 2, 3, 4]], 60, 60, 'annotation 9')
