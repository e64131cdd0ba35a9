"""ZSI-Shapes: the split needs composition, files are valid COCO, generation is deterministic."""
import hashlib
import json

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from zsi_jax.data import shapes

SMALL = shapes.ShapesConfig(num_train=30, num_val=5, num_test=20, vector_dim=32)


def test_unseen_classes_are_new_combinations_of_seen_words():
  seen, unseen = shapes.default_split()
  assert not set(seen) & set(unseen)
  seen_words = {w for n in seen for w in n.split()}
  for n in unseen:
    color, shape = n.split()
    assert color in seen_words and shape in seen_words


def test_class_vectors_norm_background_and_variants():
  seen, unseen = shapes.default_split()
  names = seen + unseen
  v, bg = shapes.class_vectors(names, 32, 0)
  np.testing.assert_allclose(np.linalg.norm(v, axis=1), shapes.CLASS_NORM, rtol=1e-5)
  np.testing.assert_allclose(bg, v.mean(0), rtol=1e-5)
  # Classes sharing a word are closer than classes sharing none.
  i, j, k = names.index('red circle'), names.index('red square'), names.index('blue square')
  assert v[i] @ v[j] > v[i] @ v[names.index('green star')]
  assert v[j] @ v[k] > v[i] @ v[names.index('green star')]
  oh, _ = shapes.class_vectors(names, 32, 0, 'onehot')
  assert oh.shape == (len(names), len(names))
  off = oh @ oh.T - np.diag(np.diag(oh @ oh.T))
  assert np.abs(off).max() == 0


def test_generate_writes_consistent_coco_and_is_deterministic(tmp_path):
  a, b = tmp_path / 'a', tmp_path / 'b'
  sa = shapes.generate(str(a), SMALL, log=lambda *_: None)
  shapes.generate(str(b), SMALL, log=lambda *_: None)
  for rel in ('annotations/train.json', 'annotations/test_gzsi.json', 'class_vectors.txt',
              'images/train_000001.png'):
    assert (hashlib.md5((a / rel).read_bytes()).hexdigest()
            == hashlib.md5((b / rel).read_bytes()).hexdigest()), rel
  split = json.loads((a / 'split.json').read_text())
  seen_ids = {split['category_ids'][n] for n in split['seen']}
  unseen_ids = {split['category_ids'][n] for n in split['unseen']}
  train = COCO(str(a / 'annotations/train.json'))
  assert {x['category_id'] for x in train.dataset['annotations']} <= seen_ids
  zsi = COCO(str(a / 'annotations/test_zsi.json'))
  gzsi = COCO(str(a / 'annotations/test_gzsi.json'))
  assert {x['category_id'] for x in zsi.dataset['annotations']} <= unseen_ids
  assert zsi.getImgIds() == gzsi.getImgIds()
  for img_id in zsi.getImgIds():  # every ZSI test image has an unseen instance
    assert zsi.getAnnIds(imgIds=[img_id])
  assert sa['test_zsi']['images'] == len(zsi.getImgIds())
  # Boxes and areas agree with the RLE masks.
  for ann in gzsi.dataset['annotations'][:20]:
    m = mask_utils.decode(ann['segmentation'])
    assert m.sum() == ann['area']
    ys, xs = np.nonzero(m)
    np.testing.assert_allclose(ann['bbox'], [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                             ys.max() - ys.min() + 1])
  vec = np.loadtxt(a / 'class_vectors.txt', delimiter=',')
  assert vec.shape == (32, 1 + len(split['seen']) + len(split['unseen']))


def test_occlusion_reduces_earlier_masks():
  rng = np.random.default_rng(0)
  cfg = shapes.ShapesConfig(min_radius=30, max_radius=31, min_visible_fraction=0.0)
  _, inst, _ = shapes.render_image(rng, ['red circle'] * 4, cfg)
  total = np.zeros((cfg.image_size, cfg.image_size), int)
  for _, m in inst:
    total += m
  assert total.max() <= 1  # visible masks never overlap
