"""COCO json -> TFDS (array_record) -> grain batches: round trip, order, shards, bad input."""
import itertools
import json
import logging
import os
import shutil

import grain
import numpy as np
import pytest
import tensorflow_datasets as tfds
from pycocotools import mask as mask_utils

from zsi_jax.data import grain_pipeline as gp
from zsi_jax.data import input_pipeline as ip
from zsi_jax.data import shapes, tfds_coco
from zsi_jax.ops.postprocess import paste_masks

CFG = shapes.ShapesConfig(num_train=12, num_val=2, num_test=4, vector_dim=8)
ONE = grain.sharding.ShardOptions(shard_index=0, shard_count=1)
KW = dict(image_size=(128, 128), scale=(128, 128), max_instances=6, mask_size=28)


@pytest.fixture(scope='module', autouse=True)
def _quiet():
  tfds.disable_progress_bar()


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp('shapes')
  shapes.generate(str(root), CFG, log=lambda *_: None)
  out = str(tmp_path_factory.mktemp('tfds'))
  tfds_coco.build(str(root), ['train', 'test_zsi'], out)
  coco = json.loads((root / 'annotations/train.json').read_text())
  anns = {}
  for a in coco['annotations']:
    anns.setdefault(a['image_id'], []).append(a)
  return root, out, coco, anns


def loader(out, split='train', **kw):
  args = dict(KW, batch_size=4, train=True, seed=3, shard_options=ONE)
  args.update(kw)
  return gp.from_tfds(out, split, **args)


def test_build_keeps_order_classes_and_exact_masks(data):
  root, out, coco, anns = data
  src = tfds_coco.load_source(out, 'train')
  assert [src[i]['image_id'] for i in range(len(src))] == [im['id'] for im in coco['images']]
  meta = tfds_coco.split_metadata(out, 'train')
  info = shapes_info(root)
  assert meta['cat_ids'] == info.cat_ids(info.seen)
  assert meta['skipped'] == dict(other_category=0, degenerate_box=0)
  assert tfds_coco.split_metadata(out, 'test_zsi')['cat_ids'] == info.cat_ids(info.unseen)
  for i in range(len(src)):
    ex = src[i]
    rec = tfds_coco.decode_example(ex)
    with open(rec['file'], 'rb') as f:
      assert rec['image_bytes'] == f.read()  # the encoded bytes, as stored
    for k, a in enumerate(anns[rec['image_id']]):
      x, y, w, h = a['bbox']
      np.testing.assert_allclose(ex['boxes'][k], [x, y, x + w, y + h], atol=1e-4)
      assert meta['cat_ids'][ex['labels'][k]] == ex['category_id'][k] == a['category_id']
      np.testing.assert_array_equal(
          mask_utils.decode(rec['anns'][k]['segmentation']),
          ip.decode_mask(a['segmentation'], rec['height'], rec['width'], 'source'))


def shapes_info(root):
  from zsi_jax.data import datasets
  return datasets.load_dataset(str(root))


@pytest.mark.parametrize('scale', [128, 192])
def test_round_trip_boxes_and_masks(data, scale):
  _, out, _, anns = data
  ld = loader(out, image_size=(scale, scale), scale=(scale, scale), mask_size=56, batch_size=6)
  flips = set()
  for batch in itertools.islice(ld.train_iterator(0), 2):  # all 12 images
    for b in range(6):
      s, flip = float(batch['scale'][b]), bool(batch['flipped'][b])
      flips.add(flip)
      assert s == pytest.approx(scale / 128)
      nh, nw = batch['input_hw'][b]
      src = anns[int(batch['image_id'][b])]
      k = int(batch['gt_valid'][b].sum())
      assert k == len(src)
      boxes, masks = batch['gt_boxes'][b, :k], batch['gt_masks'][b, :k].astype(np.float32)
      for i, a in enumerate(src):
        x, y, w, h = a['bbox']
        box = np.array([x, y, x + w, y + h]) * s
        if flip:
          box = np.array([nw - box[2], box[1], nw - box[0], box[3]])
        np.testing.assert_allclose(boxes[i], box, atol=1e-3)
      # Paste back into the original image frame, where the source mask lives.
      if flip:
        boxes = np.stack([nw - boxes[:, 2], boxes[:, 1], nw - boxes[:, 0], boxes[:, 3]], 1)
        masks = masks[:, :, ::-1]
      pasted = paste_masks(masks, boxes / s, tuple(batch['orig_hw'][b]))
      for i, a in enumerate(src):
        m = mask_utils.decode(a['segmentation']).astype(bool)
        iou = (pasted[i] & m).sum() / (pasted[i] | m).sum()
        assert iou > 0.95, (int(batch['image_id'][b]), i, iou)
  assert flips == {False, True}


def test_same_batches_as_threaded_loader(data):
  root, out, _, _ = data
  cat_ids = tfds_coco.split_metadata(out, 'train')['cat_ids']
  recs, _ = ip.load_coco(str(root / 'annotations/train.json'), str(root / 'images'), cat_ids)
  for train, bs in ((True, 4), (False, 5)):
    args = dict(KW, batch_size=bs, train=train, seed=3)
    ref = ip.Loader(recs, process_index=0, process_count=1, **args)
    new = loader(out, **args)
    if train:
      pairs = zip([next(it) for it in [ref.train_iterator(0)] for _ in range(4)],
                  [next(it) for it in [new.train_iterator(0)] for _ in range(4)])
    else:
      pairs = zip(ref.eval_iterator(), new.eval_iterator(), strict=True)
    for x, y in pairs:
      assert x.keys() == y.keys()
      for key in x:
        assert x[key].dtype == y[key].dtype, key
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_deterministic_and_resumable(data):
  _, out, _, _ = data
  it = loader(out).train_iterator(0)
  fresh = [next(it) for _ in range(6)]  # two epochs of 3 steps
  again = next(loader(out).train_iterator(4))
  for key in fresh[4]:
    np.testing.assert_array_equal(again[key], fresh[4][key])
  np.testing.assert_array_equal(loader(out).batch(5)['image'], fresh[5]['image'])
  other = next(loader(out, seed=4).train_iterator(4))
  assert not np.array_equal(other['image'], fresh[4]['image'])
  # Each epoch visits every image once, in a new order.
  ids = [np.concatenate([b['image_id'] for b in fresh[e * 3:e * 3 + 3]]) for e in (0, 1)]
  assert sorted(ids[0]) == sorted(ids[1]) == list(range(1, 13))
  assert not np.array_equal(ids[0], ids[1])


@pytest.mark.parametrize('count', [2, 3])
def test_shards_are_disjoint_and_cover(data, count):
  _, out, _, _ = data
  full = loader(out, batch_size=6)
  shards = [loader(out, batch_size=6, shard_options=grain.sharding.ShardOptions(i, count))
            for i in range(count)]
  seen = []
  for step in range(2):  # one epoch
    parts = [sh.batch(step)['image_id'] for sh in shards]
    np.testing.assert_array_equal(np.concatenate(parts), full.batch(step)['image_id'])
    seen.extend(np.concatenate(parts).tolist())
  assert sorted(seen) == list(range(1, 13))
  # Eval: each shard its slice of every global batch, padding included.
  evals = [np.concatenate([b['image_id'] for b in sh.eval_iterator()]) for sh in shards]
  real = np.concatenate(evals)
  assert sorted(real[real >= 0].tolist()) == list(range(1, 13))


def test_eval_pass_pads_last_batch(data):
  _, out, _, _ = data
  batches = list(loader(out, batch_size=5, train=False).eval_iterator())
  assert len(batches) == 3
  ids = np.concatenate([b['image_id'] for b in batches])
  np.testing.assert_array_equal(ids, list(range(1, 13)) + [-1, -1, -1])
  assert (batches[-1]['gt_classes'][2:] == -1).all() and not batches[-1]['gt_valid'][2:].any()
  assert not batches[0]['flipped'].any()


def test_overflow_is_counted(data, caplog):
  _, out, _, anns = data
  ld = loader(out, batch_size=6, max_instances=1, train=False)
  with caplog.at_level(logging.WARNING):
    batches = list(ld.eval_iterator())
  expected = sum(max(len(v) - 1, 0) for v in anns.values())
  assert expected > 0
  assert ld.dropped.total == expected == sum(int(b['num_dropped'].sum()) for b in batches)
  assert 'beyond max_instances=1' in caplog.text
  # The largest instance is the one kept.
  for b in batches:
    for i, image_id in enumerate(b['image_id']):
      areas = [a['bbox'][2] * a['bbox'][3] for a in anns[int(image_id)]]
      box = b['gt_boxes'][i, 0]
      assert (box[2] - box[0]) * (box[3] - box[1]) == pytest.approx(max(areas), rel=1e-3)


def test_worker_processes_give_the_same_batches(data):
  _, out, _, _ = data
  inline = list(loader(out, batch_size=4, train=False).eval_iterator())
  workers = list(loader(out, batch_size=4, train=False, worker_count=2).eval_iterator())
  assert len(inline) == len(workers) == 3
  for x, y in zip(inline, workers):
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def _mini(tmp_path, root, n=2):
  """A 2-image COCO dataset copied from ZSI-Shapes into ``tmp_path``."""
  coco = json.loads((root / 'annotations/train.json').read_text())
  images = coco['images'][:n]
  ids = {im['id'] for im in images}
  os.makedirs(tmp_path / 'img', exist_ok=True)
  for im in images:
    shutil.copy(root / 'images' / im['file_name'], tmp_path / 'img' / im['file_name'])
  coco = dict(coco, images=images, annotations=[a for a in coco['annotations']
                                                if a['image_id'] in ids])
  return coco


def _build(tmp_path, coco, **kw):
  (tmp_path / 'ann.json').write_text(json.dumps(coco))
  splits = {'train': (str(tmp_path / 'ann.json'), str(tmp_path / 'img'))}
  return tfds_coco.build(str(tmp_path), splits, str(tmp_path / 'out'), **kw)


def test_bad_input_names_the_file(data, tmp_path):
  root = data[0]
  coco = _mini(tmp_path, root)
  name = coco['images'][1]['file_name']
  os.remove(tmp_path / 'img' / name)
  with pytest.raises(FileNotFoundError, match=name):
    _build(tmp_path, coco)
  (tmp_path / 'img' / name).write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
  with pytest.raises(ValueError, match=name):
    _build(tmp_path, coco)
  shutil.copy(root / 'images' / name, tmp_path / 'img' / name)
  coco['images'][1]['height'] = 100
  with pytest.raises(ValueError, match=f'{name} is 128x128'):
    _build(tmp_path, coco)
  del coco['annotations'][0]['bbox']
  with pytest.raises(ValueError, match='ann.json: annotation .* lacks'):
    _build(tmp_path, coco)


def test_skipped_annotations_counted_and_corrupt_bytes_named(data, tmp_path):
  root, out, _, _ = data
  coco = _mini(tmp_path, root)
  coco['annotations'][0]['bbox'] = [5, 5, 0, 3]  # degenerate: skipped, counted
  coco['annotations'].append(dict(coco['annotations'][1], id=999, category_id=999))
  # No split.json here: the classes are the json's categories, sorted by id.
  builder = _build(tmp_path, coco)
  meta = builder.info.metadata['splits']['train']
  assert meta['skipped'] == dict(other_category=1, degenerate_box=1)
  assert meta['cat_ids'] == sorted(c['id'] for c in coco['categories'])
  src = tfds_coco.load_source(str(tmp_path / 'out'), 'train')
  assert sum(len(src[i]['labels']) for i in range(len(src))) == len(coco['annotations']) - 2
  # A stored image that no longer decodes: the error names the image and its file.
  src = tfds_coco.load_source(out, 'train')
  bad = [dict(src[0], image=b'garbage')]
  ld = gp.GrainLoader(bad, batch_size=1, train=False, shard_options=ONE, **KW)
  with pytest.raises(ValueError, match=r'image 1 \(.*train_000001\.png\): cannot decode'):
    next(ld.eval_iterator())


def _uncompressed_rle(mask):
  """Binary mask -> COCO uncompressed RLE (column-major run lengths, starting with 0s)."""
  flat = np.asarray(mask, np.uint8).ravel(order='F')
  change = np.flatnonzero(np.diff(flat)) + 1
  runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
  return dict(size=list(mask.shape), counts=([0] if flat[0] else []) + runs)


def test_polygons_uncompressed_rle_and_empty_images_round_trip(data, tmp_path):
  root = data[0]
  coco = _mini(tmp_path, root, n=3)
  h, w = coco['images'][0]['height'], coco['images'][0]['width']
  first = [a for a in coco['annotations'] if a['image_id'] == coco['images'][0]['id']]
  first[0]['segmentation'] = [[10, 10, 60, 12, 55, 70, 12, 50], [80, 80, 90, 80, 90, 95]]
  first[0]['bbox'] = [10, 10, 80, 85]
  crowd_mask = ip.decode_mask(first[-1]['segmentation'], h, w, 'src')
  first[-1]['segmentation'] = _uncompressed_rle(crowd_mask)
  first[-1]['iscrowd'] = 1
  empty = coco['images'][2]['id']
  coco['annotations'] = [a for a in coco['annotations'] if a['image_id'] != empty]
  _build(tmp_path, coco)
  src = tfds_coco.load_source(str(tmp_path / 'out'), 'train')
  recs = {r['image_id']: r for r in (tfds_coco.decode_example(src[i]) for i in range(len(src)))}
  assert recs[empty]['anns'] == []
  for a in coco['annotations']:
    got = [b for b in recs[a['image_id']]['anns']
           if np.allclose(b['box'], [a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
                                     a['bbox'][1] + a['bbox'][3]])]
    assert len(got) == 1
    assert got[0]['crowd'] == bool(a.get('iscrowd', 0))
    np.testing.assert_array_equal(mask_utils.decode(got[0]['segmentation']),
                                  ip.decode_mask(a['segmentation'], h, w, 'src'))
  # An image without instances still makes a valid, empty example.
  ld = gp.GrainLoader(src, batch_size=3, train=False, shard_options=ONE, **KW)
  batch = next(ld.eval_iterator())
  assert batch['image_id'].tolist() == [im['id'] for im in coco['images']]
  assert not batch['gt_valid'][2].any() and batch['gt_crowd'][0].any()
