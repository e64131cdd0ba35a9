"""A trained model as one file: the class space kept in the workdir, export.py,
and the exported model's detections against Predictor's."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from zsi_jax.data import datasets
from zsi_jax.data import word_vectors as wv_lib

from tests.scripts import ROOT, SCRIPT_ENV, run_script

FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'workdir_0804213')


def _without_dataset(workdir, tmp_path):
  """A copy of ``workdir`` whose config points at a dataset that does not exist."""
  copy = str(tmp_path / 'moved')
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('eval', 'predictions'))
  path = os.path.join(copy, 'config.json')
  config = json.load(open(path))
  config['data']['root'] = str(tmp_path / 'deleted_dataset')
  json.dump(config, open(path, 'w'))
  return copy


def _test_images(data, n=4):
  info = datasets.load_dataset(data)
  folder = info.image_dir('test_zsi')
  return [np.asarray(Image.open(os.path.join(folder, f)).convert('RGB'))
          for f in sorted(os.listdir(folder))[:n]]


@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
  """The tiny trained workdir exported by export.py (float32, room for 50 classes)."""
  _, workdir = trained
  out = str(tmp_path_factory.mktemp('export') / 'tiny.zsi')
  r = run_script(['export.py', '--workdir', workdir, '--out', out, '--max_classes', '50'])
  assert 'exported step 3' in r.stdout and 'predict.py --model' in r.stdout
  return out


def test_workdir_keeps_its_class_space(trained):
  data, workdir = trained
  info = datasets.load_dataset(data)
  saved = datasets.read_class_space(workdir)
  assert (saved.seen, saved.unseen) == (info.seen, info.unseen)
  assert saved.category_ids == info.category_ids
  np.testing.assert_array_equal(saved.vectors, info.vectors)
  np.testing.assert_array_equal(saved.background, info.background)
  record = json.load(open(os.path.join(workdir, datasets.CLASSES_FILE)))
  assert record['version'] == datasets.CLASSES_VERSION and record['dim'] == 16
  assert record['vector_file'] == 'class_vectors.txt'
  # The dataset's small word-vector file travels too, so new names still work.
  with open(os.path.join(workdir, record['word_vectors']), 'rb') as a, \
       open(info.word_vectors, 'rb') as b:
    assert a.read() == b.read()


def test_a_workdir_holds_one_class_space(trained, tmp_path):
  data, workdir = trained
  info = datasets.load_dataset(data)
  info.vectors = info.vectors[::-1].copy()
  copy = str(tmp_path / 'w')
  shutil.copytree(workdir, copy)
  before = open(os.path.join(copy, datasets.CLASSES_FILE)).read()
  with pytest.raises(ValueError, match='other class vectors.*new --workdir'):
    datasets.write_class_space(copy, info)
  assert open(os.path.join(copy, datasets.CLASSES_FILE)).read() == before


def test_class_space_file_is_validated(trained, tmp_path):
  _, workdir = trained
  record = json.load(open(os.path.join(workdir, datasets.CLASSES_FILE)))
  for change, message in ((dict(version=7), 'version 7'), (dict(dim=15), 'dimension 15'),
                          (dict(format='x'), 'not a zsi_jax class-space')):
    with pytest.raises(ValueError, match=message):
      datasets.class_space_from_record({**record, **change}, 'classes.json')


def test_predictor_and_predict_cli_work_with_the_dataset_gone(trained, tmp_path):
  from zsi_jax.inference import Predictor
  data, workdir = trained
  moved = _without_dataset(workdir, tmp_path)
  image = _test_images(data, 1)[0]
  p = Predictor.from_checkpoint(moved)
  q = Predictor.from_checkpoint(workdir, data_root=data)   # the dataset itself
  a = p.predict(image, class_names=['red star', 'green ring'], score_threshold=0.0)
  b = q.predict(image, class_names=['red star', 'green ring'], score_threshold=0.0)
  np.testing.assert_array_equal(a['scores'], b['scores'])
  # A name outside the class space: the word vectors copied into the workdir.
  kv = wv_lib.load_keyed_vectors(os.path.join(moved, 'word_vectors', 'word_vectors.txt'))
  words = list(kv.key_to_index)
  new = next(f'{a} {b}' for a in words for b in words
             if a != b and f'{a} {b}' not in p.info.names)
  assert p.class_vectors([new]).shape == (1, 16)
  Image.fromarray(image).save(tmp_path / 'img.png')
  out = str(tmp_path / 'pred')
  run_script(['predict.py', '--workdir', moved, '--input', str(tmp_path / 'img.png'),
              '--classes', 'unseen', '--score_threshold', '0', '--out', out])
  assert json.load(open(os.path.join(out, 'results.json')))
  # Evaluation needs the ground truth: it names the missing dataset and the flag.
  r = run_script(['eval.py', '--workdir', moved, '--split', 'zsi'], check=False)
  assert r.returncode == 1 and '--data_root' in r.stderr.strip().splitlines()[-2]


def test_old_workdir_loads_from_its_dataset_and_eval_and_predictor_agree(trained, tmp_path):
  # Written before classes.json existed: the class space comes from the dataset.
  from zsi_jax import trained as trained_lib
  from zsi_jax.evaluation import runner
  from zsi_jax.inference import Predictor
  data, _ = trained
  workdir = str(tmp_path / 'old')
  shutil.copytree(FIXTURE, workdir)
  with pytest.raises(FileNotFoundError, match='--data_root'):
    trained_lib.load(workdir)
  p = Predictor.from_checkpoint(workdir, data_root=data)
  assert p.step == 2 and p.info.root == data
  metrics = runner.evaluate(workdir, 'zsi', data_root=data, log=lambda *_: None)
  results = json.load(open(os.path.join(workdir, 'eval', 'zsi_results.json')))
  info = p.info
  ann = json.load(open(info.annotation_file('test_zsi')))
  image = ann['images'][0]
  img = np.asarray(Image.open(os.path.join(info.image_dir('test_zsi'), image['file_name']))
                   .convert('RGB'))
  mine = p.predict(img, class_names=info.unseen, score_threshold=0.0)
  theirs = sorted((r for r in results if r['image_id'] == image['id']),
                  key=lambda r: -r['score'])
  assert metrics['images'] == len(ann['images'])
  assert len(theirs) == len(mine['scores']) > 0
  np.testing.assert_allclose([r['score'] for r in theirs], mine['scores'], rtol=1e-4, atol=1e-5)
  boxes = np.array([r['bbox'] for r in theirs])
  boxes[:, 2:] += boxes[:, :2]
  np.testing.assert_allclose(boxes, mine['boxes'], atol=1e-2)
  assert [info.category_ids[n] for n in mine['class_names']] == \
      [r['category_id'] for r in theirs]


def _mask_iou(a, b):
  inter = (a & b).sum((1, 2))
  union = (a | b).sum((1, 2))
  return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _assert_same_detections(a, b):
  assert len(a['scores']) == len(b['scores'])
  np.testing.assert_allclose(a['scores'], b['scores'], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(a['boxes'], b['boxes'], atol=1e-2)
  assert a['class_names'] == b['class_names']
  if len(a['scores']):
    assert _mask_iou(a['masks'], b['masks']).min() >= 0.99


def test_exported_model_detects_what_predictor_detects(trained, exported):
  from zsi_jax.exported import ExportedModel
  from zsi_jax.inference import Predictor
  data, workdir = trained
  m = ExportedModel.load(exported)
  p = Predictor.from_checkpoint(workdir, max_classes=50)
  assert m.step == p.step == 3 and m.max_classes == 50
  rng = np.random.default_rng(0)
  # Never-seen classes: random directions at the trained vectors' norm.
  new = rng.normal(size=(5, 16)).astype(np.float32)
  new *= np.linalg.norm(p.info.vectors, axis=1).mean() / np.linalg.norm(new, axis=1,
                                                                         keepdims=True)
  total = 0
  for img in _test_images(data):
    for kw in (dict(class_names=p.info.names),
               dict(class_names=p.info.unseen[:4]),
               dict(class_vectors=new)):
      a = m.predict(img, score_threshold=0.0, **kw)
      b = p.predict(img, score_threshold=0.0, **kw)
      _assert_same_detections(a, b)
      total += len(a['scores'])
  assert total > 0


def test_exported_model_runs_without_the_model_code(trained, exported):
  data, _ = trained
  folder = datasets.load_dataset(data).image_dir('test_zsi')
  image = os.path.join(folder, sorted(os.listdir(folder))[0])
  code = f'''
import sys
from zsi_jax.exported import ExportedModel
m = ExportedModel.load({exported!r})
out = m.predict({image!r}, class_names=m.info.unseen[:3], score_threshold=0.0)
print(len(out['scores']))
bad = sorted(k for k in sys.modules if k.startswith(('zsi_jax.modeling', 'flax', 'orbax')))
assert not bad, bad
'''
  r = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=SCRIPT_ENV,
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-3000:]


def test_exported_model_files_record_what_they_are(exported):
  from zsi_jax import exported as exported_lib
  meta = exported_lib.read_metadata(exported)
  assert meta['format_version'] == exported_lib.FORMAT_VERSION
  assert meta['platforms'] == ['cpu', 'cuda', 'tpu']
  assert meta['image_size'] == [64, 64] and meta['max_classes'] == 50
  assert meta['step'] == 3 and meta['config']['data']['image_size'] == [64, 64]
  assert len(meta['classes']['seen']) == 36 and meta['vector_dim'] == 16
  assert meta['word_vectors'] == 'word_vectors/word_vectors.txt'


def _rewrite(src, dst, change):
  """Copies the model file ``src`` to ``dst`` with its metadata changed by ``change``."""
  with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, 'w') as b:
    for item in a.infolist():
      data = a.read(item)
      if item.filename == 'metadata.json':
        meta = json.loads(data)
        change(meta)
        data = json.dumps(meta)
      b.writestr(item, data)


def test_bad_model_files_and_inputs_get_one_line(exported, tmp_path):
  from zsi_jax.exported import ExportedModel
  with pytest.raises(FileNotFoundError, match='model file not found'):
    ExportedModel.load(str(tmp_path / 'none.zsi'))
  data = open(exported, 'rb').read()
  cut = tmp_path / 'cut.zsi'
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match='cut.zsi.*truncated'):
    ExportedModel.load(str(cut))
  other = str(tmp_path / 'v9.zsi')
  _rewrite(exported, other, lambda m: m.update(format_version=9))
  with pytest.raises(ValueError, match=r'v9.zsi: model format version 9.*reads version 1'):
    ExportedModel.load(other)

  m = ExportedModel.load(exported)
  img = np.zeros((40, 40, 3), np.uint8)
  with pytest.raises(ValueError, match='51 classes.*at most 50.*--max_classes'):
    m.predict(img, class_vectors=np.ones((51, 16), np.float32))
  with pytest.raises(ValueError, match=r'\[K, 16\].*\(3, 8\)'):
    m.predict(img, class_vectors=np.ones((3, 8), np.float32))
  with pytest.raises(ValueError, match='no word vector.*zebra crossing'):
    m.predict(img, class_names=['red star', 'zebra crossing'])


def test_images_larger_than_the_canvas_are_resized_not_cropped(trained, exported):
  from zsi_jax.exported import ExportedModel
  data, _ = trained
  m = ExportedModel.load(exported)
  small = _test_images(data, 1)[0]
  big = np.asarray(Image.fromarray(small).resize((64 * 5, 64 * 3)))   # 320 x 192, not square
  out = m.predict(big, class_names=m.info.unseen, score_threshold=0.0)
  assert out['masks'].shape[1:] == (192, 320)
  if len(out['scores']):
    assert out['boxes'][:, 2].max() <= 320 and out['boxes'][:, 3].max() <= 192


def test_bfloat16_export_is_smaller_and_agrees(trained, exported, tmp_path):
  from zsi_jax.exported import ExportedModel
  data, workdir = trained
  out = str(tmp_path / 'bf16.zsi')
  run_script(['export.py', '--workdir', workdir, '--out', out, '--max_classes', '50',
              '--dtype', 'bfloat16'])
  meta_size = len(zipfile.ZipFile(out).read('metadata.json'))
  params = lambda f: zipfile.ZipFile(f).getinfo('variables.npz').file_size
  assert params(out) < 0.6 * params(exported)
  a, b = ExportedModel.load(out), ExportedModel.load(exported)
  assert meta_size > 0 and a.metadata['dtype'] == 'bfloat16'
  img = _test_images(data, 1)[0]
  pa = a.predict(img, class_names=a.info.unseen, score_threshold=0.0)
  pb = b.predict(img, class_names=b.info.unseen, score_threshold=0.0)
  # bfloat16 keeps 8 bits of mantissa: the strongest detection stays, close.
  assert len(pa['scores']) and len(pb['scores'])
  assert abs(pa['scores'][0] - pb['scores'][0]) < 0.05


def test_predict_cli_takes_a_model_file(trained, exported, tmp_path):
  data, _ = trained
  out = str(tmp_path / 'pred')
  run_script(['predict.py', '--model', exported, '--dataset_split', 'test_zsi',
              '--classes', 'unseen', '--score_threshold', '0', '--out', out])
  results = json.load(open(os.path.join(out, 'results.json')))
  assert results and {r['image_id'] for r in results} <= {
      im['id'] for im in json.load(open(os.path.join(data, 'annotations', 'test_zsi.json')))[
          'images']}
  r = run_script(['predict.py', '--model', exported, '--checkpoint', '3', '--input', out],
                 check=False)
  assert r.returncode != 0 and '--checkpoint: only with --workdir' in r.stderr
