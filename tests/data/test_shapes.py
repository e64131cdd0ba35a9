"""ZSI-Shapes: the split needs composition, files are valid COCO, generation is deterministic."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from zsi_jax.data import shapes

SMALL = shapes.ShapesConfig(num_train=30, num_val=5, num_test=20, vector_dim=32)


def test_unseen_classes_are_new_combinations_of_seen_words():
  seen, unseen = shapes.class_split()
  assert not set(seen) & set(unseen)
  seen_words = {w for n in seen for w in n.split()}
  for n in unseen:
    color, shape = n.split()
    assert color in seen_words and shape in seen_words


def test_class_vectors_norm_background_and_variants():
  seen, unseen = shapes.class_split()
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
  _, inst, counts = shapes.render_image(rng, ['red circle'] * 4, cfg)
  total = np.zeros((cfg.image_size, cfg.image_size), int)
  for _, m in inst:
    total += m
  assert total.max() <= 1  # visible masks never overlap


def test_hard_preset_classes_and_rare_words():
  hard = shapes.PRESETS['hard']
  seen, unseen = shapes.class_split(hard)
  assert (len(seen), len(unseen)) == (65, 15)
  assert len({w for n in seen + unseen for w in n.split()}) > len(
      {w for n in shapes.class_names() for w in n.split()})   # more attribute words
  seen_words = {w for n in seen for w in n.split()}
  rare = set(hard.rare_words)
  for n in unseen:  # composable from seen words, and made of at least one rare word
    assert set(n.split()) <= seen_words and set(n.split()) & rare
  # Seen classes with rare words are drawn at rare_weight ** count of the rate.
  p = shapes.class_weights(seen, hard)
  by_name = dict(zip(seen, p))
  assert np.isclose(by_name['cyan star'] / by_name['red star'], hard.rare_weight)
  assert np.isclose(by_name['cyan ring'] / by_name['red star'], hard.rare_weight ** 2)
  np.testing.assert_allclose(p.sum(), 1.0)


def _word_counts(root, split):
  coco = json.loads((root / 'annotations' / f'{split}.json').read_text())
  names = {c['id']: c['name'] for c in coco['categories']}
  counts = {}
  for a in coco['annotations']:
    for w in names[a['category_id']].split():
      counts[w] = counts.get(w, 0) + 1
  return counts, coco


def test_hard_preset_is_harder_and_deterministic(tmp_path):
  small = dict(num_train=120, num_val=2, num_test=30, vector_dim=16)
  hard = dataclasses.replace(shapes.PRESETS['hard'], **small)
  default = dataclasses.replace(shapes.PRESETS['default'], **small)
  sh = shapes.generate(str(tmp_path / 'h'), hard, log=lambda *_: None)
  sd = shapes.generate(str(tmp_path / 'd'), default, log=lambda *_: None)
  shapes.generate(str(tmp_path / 'h2'), hard, log=lambda *_: None)
  for rel in ('annotations/train.json', 'annotations/test_gzsi.json', 'images/train_000007.png',
              'split.json'):
    assert (tmp_path / 'h' / rel).read_bytes() == (tmp_path / 'h2' / rel).read_bytes(), rel
  # More objects per image, more of them partly covered, and distractors drawn.
  per_image = lambda s: s['train']['instances'] / s['train']['images']
  assert per_image(sh) > 1.3 * per_image(sd)
  assert sh['occluded_instances_kept'] > 2 * sd['occluded_instances_kept']
  assert sd['distractors'] == 0 and sh['distractors'] >= 120   # 1-3 on every image
  # Smaller objects.
  area = lambda root: np.median([a['area'] for a in _word_counts(root, 'train')[1]['annotations']])
  assert area(tmp_path / 'h') < 0.6 * area(tmp_path / 'd')
  # The unseen classes' words are rarer in training than the other words.
  counts, _ = _word_counts(tmp_path / 'h', 'train')
  rare = set(hard.rare_words)
  assert max(counts.get(w, 0) for w in rare) < min(c for w, c in counts.items() if w not in rare)
  split = json.loads((tmp_path / 'h' / 'split.json').read_text())
  assert split['name'] == 'zsi_shapes_hard' and len(split['unseen']) == 15


def test_distractors_are_drawn_but_never_annotated():
  # No clutter strokes, no instances: whatever object-colored pixels appear
  # are the distractors', and nothing is annotated.
  cfg = dataclasses.replace(shapes.PRESETS['hard'], strokes=(0, 1), distractors=(2, 2),
                            min_radius=15.0)
  img, inst, counts = shapes.render_image(np.random.default_rng(3), [], cfg)
  assert inst == [] and counts.distractors == 2
  vivid = ((img.min(-1) < 50) | (img.max(-1) > 215)).sum()   # the background stays in 60-190
  assert vivid > 200
  plain = dataclasses.replace(cfg, distractors=(0, 0))
  img, _, counts = shapes.render_image(np.random.default_rng(3), [], plain)
  assert counts.distractors == 0 and ((img.min(-1) < 50) | (img.max(-1) > 215)).sum() < 20
  # With instances, the annotations are exactly the instances, in paint order.
  _, inst, counts = shapes.render_image(np.random.default_rng(4), ['red circle', 'blue star'],
                                        dataclasses.replace(cfg, min_visible_fraction=0.0))
  assert counts.distractors == 2 and [n for n, _ in inst] == ['red circle', 'blue star']


def test_unseen_classes_must_be_classes_of_the_preset():
  with pytest.raises(ValueError, match='not "<color> <shape>"'):
    shapes.class_split(dataclasses.replace(shapes.PRESETS['hard'], unseen=('red crescent',)))
