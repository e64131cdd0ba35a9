"""Inference for people: a tiny trained checkpoint -> Predictor, predict.py,
eval.py and the example notebook; pictures from zsi_jax.visualize."""
import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from zsi_jax import visualize
from zsi_jax.data import datasets, shapes
from zsi_jax.data import word_vectors as wv_lib

from tests.scripts import ROOT, run_script as _run


def test_console_shows_progress_and_the_log_file_the_rest(trained):
  # orbax's and absl's INFO lines go to WORKDIR/train.log only; the console
  # keeps the progress bar and this package's own messages.
  _, workdir = trained
  console = open(os.path.join(workdir, 'console.txt')).read()
  log = open(os.path.join(workdir, 'train.log')).read()
  assert 'train: 100%' in console and 'train: 8 images' in console
  assert 'CheckpointManager' not in console and 'checkpoint_manager' not in console
  assert 'CheckpointManager' in log and 'train: 8 images' in log


def test_periodic_evaluation_is_logged(trained):
  _, workdir = trained
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  evals = [r for r in rows if 'eval/seen_mask_recall@100_iou0.5' in r]
  assert [r['step'] for r in evals] == [3]
  for k in ('box', 'mask'):
    for key in ('recall@100_iou0.5', 'map@0.5'):
      v = evals[0][f'eval/seen_{k}_{key}']
      assert v != v or 0.0 <= v <= 1.0


def test_predictor_round_trip_and_no_recompilation(trained):
  from zsi_jax.inference import Predictor
  data, workdir = trained
  p = Predictor.from_checkpoint(workdir)
  info = p.info
  assert p.step == 3
  img = np.asarray(Image.open(os.path.join(info.image_dir('test_zsi'),
                                           sorted(os.listdir(info.image_dir('test_zsi')))[0])))
  out = p.predict(img, class_names=info.unseen[:3], score_threshold=0.0)
  n = len(out['scores'])
  assert out['boxes'].shape == (n, 4) and out['masks'].shape == (n,) + img.shape[:2]
  assert out['masks'].dtype == bool
  assert set(out['class_names']) <= set(info.unseen[:3])
  assert np.all(out['boxes'][:, [0, 2]] <= img.shape[1]) and np.all(out['boxes'] >= 0)
  assert np.all(np.diff(out['scores']) <= 1e-6)  # sorted by score
  # Other class lists (size and content) reuse the compiled detector.
  p.predict(img, class_names=info.seen[:5] + info.unseen[:1])
  p.predict(img, class_vectors=info.vectors[:7] * 0.5)
  assert p.compilations() == 1


def test_class_names_through_the_word_vector_file(trained):
  from zsi_jax.inference import Predictor
  data, workdir = trained
  info = datasets.load_dataset(data)
  kv = wv_lib.load_keyed_vectors(info.word_vectors)
  # ZSI-Shapes' word-vector file gives every class the vector it was trained with.
  vecs, _ = wv_lib.class_vectors(kv, info.names, norm=shapes.CLASS_NORM)
  np.testing.assert_allclose(vecs, info.vectors, atol=1e-6)
  p = Predictor.from_checkpoint(workdir)
  with pytest.raises(ValueError, match=r"purple star.*orange blob|orange blob.*purple star"):
    p.class_vectors(['red star', 'purple star', 'orange blob'])
  with pytest.raises(ValueError, match='duplicates'):
    p.class_vectors(['red star', 'red star'])
  with pytest.raises(ValueError, match=r'\[K, 16\]'):
    p.predict(np.zeros((32, 32, 3), np.uint8), class_vectors=np.ones((2, 5), np.float32))


def test_predict_cli_and_eval_results_load_in_pycocotools(trained, tmp_path):
  data, workdir = trained
  out = str(tmp_path / 'pred')
  grid = str(tmp_path / 'grid.png')
  _run(['predict.py', '--workdir', workdir, '--dataset_split', 'test_zsi', '--classes', 'unseen',
        '--score_threshold', '0', '--out', out, '--grid', grid])
  gt = COCO(os.path.join(data, 'annotations', 'test_zsi.json'))
  pngs = [f for f in os.listdir(out) if f.endswith('.png')]
  assert len(pngs) == len(gt.getImgIds())
  for f in pngs:
    with Image.open(os.path.join(out, f)) as im:
      assert im.size == (128, 128)  # 64 px images at picture_scale 2
  with Image.open(grid) as im:
    assert im.size[0] > 128
  results = json.load(open(os.path.join(out, 'results.json')))
  assert results, 'score_threshold 0 keeps detections'
  dt = gt.loadRes(results)  # ids and RLEs are valid COCO
  assert set(dt.getCatIds()) <= set(gt.getCatIds())

  _run(['eval.py', '--workdir', workdir, '--split', 'zsi,gzsi'])
  for setting in ('zsi', 'gzsi'):
    res = json.load(open(os.path.join(workdir, 'eval', f'{setting}_results.json')))
    ann = os.path.join(data, 'annotations', f'test_{setting}.json')
    if res:
      COCO(ann).loadRes(res)
    m = json.load(open(os.path.join(workdir, 'eval', f'{setting}_metrics.json')))
    assert m['images'] == len(gt.getImgIds())
    for kind in ('box', 'mask'):
      r = m[kind]['recall@100_iou0.5']
      assert r != r or 0.0 <= r <= 1.0


def test_example_notebook_runs(trained):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  _, workdir = trained
  nb = nbformat.read(os.path.join(ROOT, 'examples', 'segment_unseen_classes.ipynb'), as_version=4)
  # The tiny test model stands in for both presets' models.
  os.environ['ZSI_WORKDIRS'] = f'default={workdir},hard={workdir}'
  try:
    nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                            resources={'metadata': {'path': ROOT}}).execute()
  finally:
    del os.environ['ZSI_WORKDIRS']
  with Image.open(os.path.join(workdir, 'notebook_prediction.png')) as im:
    assert im.size == (64 * 3, 64 * 3)
  with Image.open(os.path.join(workdir, 'notebook_unseen.png')) as im:
    assert im.size[0] > 4 * 64 * 2   # four pictures at scale 2 in a row
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  pictures = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(pictures) == 4, ('both presets\' grids and the pictures of the custom list and '
                              'of the exported model are displayed')
  with Image.open(os.path.join(workdir, 'notebook_exported.png')) as im:
    assert im.size == (64 * 3, 64 * 3)


def test_draw_predictions_marks_masks_and_tells_unseen_apart():
  # Boxes well below the top edge: each label tag sits above its box.
  img = np.full((80, 80, 3), 100, np.uint8)
  masks = np.zeros((2, 80, 80), bool)
  masks[0, 30:40, 5:15] = True
  masks[1, 55:70, 40:55] = True
  pred = dict(boxes=np.array([[5, 30, 15, 40], [40, 55, 55, 70]], np.float32),
              scores=np.array([0.9, 0.8]), class_names=['red star', 'blue ring'], masks=masks)
  pic = np.asarray(visualize.draw_predictions(img, pred, unseen={'blue ring'}))
  color = np.array(visualize.class_color('red star'))
  assert np.array_equal(pic[35, 5], color)                    # outline: the class colour
  inside = pic[35, 10].astype(float)                          # fill: blended
  np.testing.assert_allclose(inside, 0.65 * 100 + 0.35 * color, atol=1)
  assert np.array_equal(pic[75, 5], [100, 100, 100])          # background untouched
  # Unseen boxes are 3 px wide, seen ones 1 px.
  blue = np.array(visualize.class_color('blue ring'))
  assert np.array_equal(pic[62, 40], blue) and np.array_equal(pic[62, 42], blue)
  assert np.array_equal(pic[35, 16], [100, 100, 100])
  square = np.zeros((20, 20), bool)
  square[5:15, 5:15] = True
  edges = visualize.mask_outline(square)
  assert edges.sum() == 36 and not edges[10, 10] and edges[5, 9]
