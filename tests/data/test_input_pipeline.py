"""Input pipeline: round trip of boxes and masks, flip, determinism, sharding, bad input."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from zsi_jax.data import input_pipeline as ip
from zsi_jax.data import shapes
from zsi_jax.ops.postprocess import paste_masks

CFG = shapes.ShapesConfig(num_train=12, num_val=2, num_test=4, vector_dim=8)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('shapes')
  shapes.generate(str(root), CFG, log=lambda *_: None)
  split = json.loads((root / 'split.json').read_text())
  cat_ids = [split['category_ids'][n] for n in split['seen']]
  recs, counts = ip.load_coco(str(root / 'annotations/train.json'), str(root / 'images'), cat_ids)
  return root, recs, counts, cat_ids


def test_round_trip_boxes_and_masks(data):
  root, recs, counts, _ = data
  assert counts == dict(other_category=0, degenerate_box=0)
  coco = json.loads((root / 'annotations/train.json').read_text())
  anns = {}
  for a in coco['annotations']:
    anns.setdefault(a['image_id'], []).append(a)
  for flip in (False, True):
    for rec in recs[:6]:
      ex = ip.make_example(rec, (192, 192), (192, 192), 8, 56, flip=flip)
      s = float(ex['scale'])
      assert s == pytest.approx(1.5)
      nh, nw = ex['input_hw']
      k = int(ex['gt_valid'].sum())
      assert k == len(anns[rec['image_id']])
      pasted = paste_masks(ex['gt_masks'][:k].astype(np.float32), ex['gt_boxes'][:k], (nh, nw))
      for i, a in enumerate(anns[rec['image_id']]):
        x, y, w, h = a['bbox']
        box = np.array([x, y, x + w, y + h]) * s
        if flip:
          box = np.array([nw - box[2], box[1], nw - box[0], box[3]])
        np.testing.assert_allclose(ex['gt_boxes'][i], box, atol=1e-3)
        src = mask_utils.decode(a['segmentation'])
        from PIL import Image
        src = np.asarray(Image.fromarray(src * 255).resize((nw, nh), Image.NEAREST)) > 127
        if flip:
          src = src[:, ::-1]
        inter = (pasted[i] & src).sum()
        iou = inter / (pasted[i] | src).sum()
        assert iou > 0.9, (rec['image_id'], i, iou)


def test_deterministic_resume_and_disjoint_shards(data):
  _, recs, _, _ = data
  kw = dict(batch_size=4, image_size=(128, 128), scale=(128, 128), max_instances=6, mask_size=28,
            train=True, seed=3)
  a = ip.Loader(recs, process_index=0, process_count=1, **kw)
  it = a.train_iterator(0)
  batches = [next(it) for _ in range(5)]
  resumed = next(a.train_iterator(3))
  np.testing.assert_array_equal(resumed['image'], batches[3]['image'])
  s0 = ip.Loader(recs, process_index=0, process_count=2, **kw).batch(2)
  s1 = ip.Loader(recs, process_index=1, process_count=2, **kw).batch(2)
  both = np.concatenate([s0['image_id'], s1['image_id']])
  np.testing.assert_array_equal(both, batches[2]['image_id'])
  # One epoch (3 steps of 4 over 12 images) visits every image once.
  ids = np.concatenate([b['image_id'] for b in batches[:3]])
  assert sorted(ids.tolist()) == sorted(r['image_id'] for r in recs)


def test_eval_iterator_pads_last_batch(data):
  _, recs, _, _ = data
  ld = ip.Loader(recs, batch_size=5, image_size=(128, 128), scale=(128, 128), max_instances=6,
                 mask_size=28, train=False, process_index=0, process_count=1)
  batches = list(ld.eval_iterator())
  assert len(batches) == 3
  assert (batches[-1]['image_id'] == -1).sum() == 3
  assert not batches[-1]['gt_valid'][2:].any()


def test_max_instances_cut_is_counted(data):
  _, recs, _, _ = data
  rec = max(recs, key=lambda r: len(r['anns']))
  ex = ip.make_example(rec, (128, 128), (128, 128), 1, 28, flip=False)
  assert int(ex['num_dropped']) == len(rec['anns']) - 1


def test_bad_input_errors_name_the_file(tmp_path, data):
  _, recs, _, cat_ids = data
  bad = dict(recs[0], file=str(tmp_path / 'missing.png'))
  with pytest.raises(FileNotFoundError, match='missing.png'):
    ip.make_example(bad, (128, 128), (128, 128), 4, 28, False)
  (tmp_path / 'corrupt.png').write_bytes(b'not a png')
  with pytest.raises(ValueError, match='corrupt.png'):
    ip.make_example(dict(recs[0], file=str(tmp_path / 'corrupt.png')), (128, 128), (128, 128),
                    4, 28, False)
  (tmp_path / 'bad.json').write_text('{"images": [')
  with pytest.raises(ValueError, match='bad.json'):
    ip.load_coco(str(tmp_path / 'bad.json'), str(tmp_path), cat_ids)
  (tmp_path / 'ann.json').write_text(json.dumps({'images': [], 'annotations': [
      {'id': 7, 'image_id': 3, 'category_id': cat_ids[0], 'bbox': [0, 0, 1, 1]}]}))
  with pytest.raises(ValueError, match='annotation 7'):
    ip.load_coco(str(tmp_path / 'ann.json'), str(tmp_path), cat_ids)
