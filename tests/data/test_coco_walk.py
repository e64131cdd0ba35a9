"""The COCO recipe (README, "Data"; docs/COCO.md) walked command by command on a
COCO-2014-shaped stand-in (coco_standin.py): make_coco_splits.py (65/15 and
48/17); make_tfds.py, run as train.py's own error prints it; train.py with
configs/coco_65_15.py at its real model and canvas (R101-FPN, 1344x1344; only
the data paths, batch size, step count and checkpoint/log intervals
overridden), killed after a checkpoint and resumed by the same command;
eval.py --split zsi,gzsi; predict.py on one's own images. Then the custom-split
walk (make_word_vectors.py from a word2vec-format file, --split my_split.json
--vectors), trained with tests/tiny_config.py so that the R101 recipe is compiled
once in this module.

Every command is a subprocess, as a user types it (about 7 minutes on 2 cores).
Alone: python -m pytest -q -s tests/data/test_coco_walk.py (-s prints each
command's seconds).
"""
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.data import coco_standin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.slow

# Seconds per command, printed at the end of the module (pytest -s shows them).
TIMES = {}


@pytest.fixture(scope='module', autouse=True)
def _report_times():
  yield
  print('\ncoco walk, seconds per command: ' +
        ', '.join(f'{k} {v:.0f}' for k, v in TIMES.items()))


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """The subprocesses' environment: this checkout first, one compilation cache
  for all of them (the resume, eval.py and predict.py reuse what train.py compiled)."""
  e = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT,
           JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp('jax_cache')),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='1')
  e.pop('XLA_FLAGS', None)
  return e


def run(name, args, env, expect_rc=0, timeout=900):
  """Runs ``python args...`` in the repository root; returns stdout + stderr."""
  t = time.time()
  r = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=timeout)
  TIMES[name] = time.time() - t
  out = r.stdout + r.stderr
  assert r.returncode == expect_rc, f'{name}: exit status {r.returncode}\n{out[-4000:]}'
  return out


def error_line(output):
  """The one ``error: ...`` line of a failed command."""
  errors = [l for l in output.splitlines() if l.startswith('error: ')]
  assert len(errors) == 1, output[-3000:]
  return errors[0]


def hinted_command(line, marker=None):
  """The arguments of the command a message prints (after ``marker``, to the end
  of the line), for this interpreter in place of its leading 'python'."""
  words = shlex.split(line.split(marker, 1)[1] if marker else line)
  assert words[0] == 'python', line
  return words[1:]


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('coco'))
  ids = coco_standin.write(root)
  # One's own photos: a JPEG of each orientation, outside any dataset.
  photos = os.path.join(root, 'my_photos')
  os.makedirs(photos)
  shutil.copy(os.path.join(root, 'val2014', coco_standin.file_name('val2014', 'v1')),
              os.path.join(photos, 'street.jpg'))
  Image.fromarray(np.full((640, 480, 3), 120, np.uint8)).save(os.path.join(photos, 'tall.png'))
  return root, ids


def check_split_folder(out, coco_ids, expected, names):
  """The files make_coco_splits.py writes, against what the stand-in holds."""
  load = lambda s: json.load(open(os.path.join(out, 'annotations', f'{s}.json')))
  train, zsi, gzsi = load('train'), load('test_zsi'), load('test_gzsi')
  stems = lambda d, folder: sorted(k for k, v in coco_ids[folder].items()
                                   if v in {im['id'] for im in d['images']})
  assert stems(train, 'train2014') == expected['train']
  assert stems(zsi, 'val2014') == stems(gzsi, 'val2014') == expected['test']
  counts = expected['counts']
  assert len(train['annotations']) == counts['train']['instances']
  assert len(zsi['annotations']) == counts['test_zsi']['instances']
  assert len(gzsi['annotations']) == counts['test_gzsi']['instances']
  seen, unseen = names
  assert [c['name'] for c in gzsi['categories']] == seen + unseen
  assert [c['name'] for c in zsi['categories']] == unseen
  split = json.load(open(os.path.join(out, 'split.json')))
  assert (split['seen'], split['unseen']) == (seen, unseen)
  # Real COCO ids survive: the category ids are those of COCO's own files.
  real = {c['name']: c['id'] for c in json.load(open(coco_standin.FIXTURE))['categories']}
  assert split['category_ids'] == {n: real[n] for n in seen + unseen}
  vectors = np.loadtxt(os.path.join(out, 'class_vectors.txt'), delimiter=',')
  assert vectors.shape[1] == len(seen) + len(unseen) + 1
  # Crowd annotations keep their uncompressed RLE, as COCO has them.
  crowd = [a for a in gzsi['annotations'] + train['annotations'] if a['iscrowd']]
  assert crowd and all(isinstance(a['segmentation']['counts'], list) for a in crowd)


def make_splits(coco, env, split, out, *extra):
  """Runs make_coco_splits.py on the stand-in; returns what it printed."""
  return run(f'make_coco_splits {os.path.basename(split)}',
             ['data_prep/make_coco_splits.py', '--coco_root', coco[0], '--split', split,
              '--out', out, *extra], env)


@pytest.fixture(scope='module')
def split_65(coco, env, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('data') / 'zsi_65_15')
  return out, make_splits(coco, env, '65_15', out)


def test_both_builtin_splits_are_made_and_built(coco, split_65, env, tmp_path):
  from zsi_jax.data import splits
  for name in ('65_15', '48_17'):
    if name == '65_15':
      out, text = split_65
    else:
      out = str(tmp_path / 'zsi_48_17')
      text = make_splits(coco, env, name, out)
    expected = coco_standin.EXPECTED[name]
    for split, counts in expected['counts'].items():
      assert f'{split}: {counts!r}' in text.replace('"', "'")
    _, seen, unseen = splits.get_split(name)
    check_split_folder(out, coco[1], expected, (seen, unseen))
  # make_tfds.py builds, by default, the splits the folder has (no val for COCO).
  text = run('make_tfds 48_17', ['data_prep/make_tfds.py', '--root', out, '--out',
                                 out + '_tfds'], env)
  for split, counts in coco_standin.EXPECTED['48_17']['counts'].items():
    assert f'{split}: {counts["images"]} images' in text
  assert 'val:' not in text


def test_a_missing_split_folder_names_the_command_that_makes_it(coco, env, tmp_path):
  from zsi_jax.data import datasets
  data = str(tmp_path / 'zsi_48_17')      # named as the COCO configs name theirs
  with pytest.raises(FileNotFoundError, match='make_coco_splits.py') as e:
    datasets.load_dataset(data)
  # 'COCO' stands for the user's COCO folder; with it filled in, the command runs.
  command = str(e.value).split('make the dataset first: ', 1)[1].split(' (COCO:')[0]
  run('make_coco_splits (the hint)',
      hinted_command(command.replace('--coco_root COCO ', f'--coco_root {coco[0]} ')), env)
  assert len(datasets.load_dataset(data).names) == 65
  with pytest.raises(FileNotFoundError, match='make_shapes.py --out'):
    datasets.load_dataset(str(tmp_path / 'shapes'))


@pytest.fixture(scope='module')
def recipe(split_65, env, tmp_path_factory):
  """configs/coco_65_15.py trained to 2 steps with a kill after step 1: the workdir and outputs."""
  data, splits_text = split_65
  workdir = str(tmp_path_factory.mktemp('runs') / 'coco_65_15')
  train = ['train.py', '--config', 'configs/coco_65_15.py', '--workdir', workdir,
           f'--config.data.root={data}', f'--config.data.tfds_dir={data}_tfds',
           '--config.data.batch_size=1', '--config.checkpoint_every=1', '--config.log_every=1']
  # No TFDS dataset yet: train.py names the command that builds it, which
  # make_coco_splits.py printed too; run it as printed.
  missing = error_line(run('train.py without TFDS', train, env, expect_rc=1))
  build = hinted_command(missing, 'build it with ')
  assert ' '.join(['python'] + build) in splits_text
  tfds_text = run('make_tfds 65_15 (the hint)', build, env)
  # A 2-step run killed (SIGKILL, as a preemption does) once its step-1
  # checkpoint is written, then the same command again: it resumes, and
  # compiles nothing new (the same step, from the shared cache).
  train += ['--config.total_steps=2']
  t = time.time()
  killed = subprocess.run([sys.executable, 'tests/training/hooked_run.py', '--kill_at=1'] +
                          train[1:], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900, start_new_session=True)
  TIMES['train.py killed after step 1'] = time.time() - t
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-4000:]
  resumed = run('train.py resumed to 2', train, env)
  # One compiled train step in the cache: the resume found the killed run's.
  cache = env['JAX_COMPILATION_CACHE_DIR']
  assert len([f for f in os.listdir(cache) if f.startswith('jit_step-')]) == 1
  return dict(data=data, workdir=workdir, tfds=tfds_text, resumed=resumed)


def metrics_of(workdir):
  return [json.loads(l) for l in open(os.path.join(workdir, 'metrics.jsonl'))]


def test_recipe_trains_at_its_real_shapes_and_resumes(recipe):
  for split, counts in coco_standin.EXPECTED['65_15']['counts'].items():
    assert f'{split}: {counts["images"]} images' in recipe['tfds']
  workdir = recipe['workdir']
  config = json.load(open(os.path.join(workdir, 'config.json')))
  # The recipe itself ran: R101-FPN on the 1344x1344 canvas, through grain.
  assert config['model']['backbone']['depth'] == 101
  assert config['data']['image_size'] == [1344, 1344]
  assert config['data']['pipeline'] == 'grain'
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')) if s.isdigit())
  assert steps == [1, 2]
  # The second run restored step 1 and went on; each step logged once, finite.
  log = open(os.path.join(workdir, 'train.log')).read()
  assert 'resumed from step 1' in log
  m = metrics_of(workdir)
  assert [r['step'] for r in m] == [1, 2]
  assert all(np.isfinite(r['total']) and np.isfinite(r['grad_norm']) for r in m)


def check_evaluation(workdir, data, step):
  """eval.py's files for ZSI and GZSI: complete, on the right images and classes."""
  split = json.load(open(os.path.join(data, 'split.json')))
  ids = split['category_ids']
  for setting, names in (('zsi', split['unseen']), ('gzsi', split['seen'] + split['unseen'])):
    gt = json.load(open(os.path.join(data, 'annotations', f'test_{setting}.json')))
    sizes = {im['id']: [im['height'], im['width']] for im in gt['images']}
    results = json.load(open(os.path.join(workdir, 'eval', f'{setting}_results.json')))
    assert isinstance(results, list)
    for r in results:
      assert r['image_id'] in sizes and r['category_id'] in {ids[n] for n in names}
      assert r['segmentation']['size'] == sizes[r['image_id']]   # original pixels
    m = json.load(open(os.path.join(workdir, 'eval', f'{setting}_metrics.json')))
    assert (m['setting'], m['step'], m['images'], m['detections']) == (
        setting, step, len(sizes), len(results))
    keys = ['recall@100_iou0.4', 'recall@100_iou0.5', 'recall@100_iou0.6', 'map@0.5']
    if setting == 'gzsi':
      keys += ['seen_map@0.5', 'unseen_map@0.5', 'hm_map@0.5', 'seen_recall@100',
               'unseen_recall@100', 'hm_recall@100']
    for kind in ('box', 'mask'):
      for key in keys:
        assert -1 <= m[kind][key] <= 1, (setting, kind, key, m[kind][key])


def check_predictions(out, photos_expected, categories_expected):
  images = json.load(open(os.path.join(out, 'images.json')))
  assert sorted((os.path.basename(im['file_name']), im['height'], im['width'])
                for im in images) == photos_expected
  for name, _, _ in photos_expected:
    assert os.path.exists(os.path.join(out, os.path.splitext(name)[0] + '.png'))
  cats = json.load(open(os.path.join(out, 'categories.json')))
  assert [(c['name'], c['id'], c['unseen']) for c in cats] == categories_expected
  # Masks of any detection in its image's own pixels (an untrained model may
  # find nothing above the config's score threshold).
  results = json.load(open(os.path.join(out, 'results.json')))
  sizes = {im['id']: [im['height'], im['width']] for im in images}
  for r in results:
    assert r['image_id'] in sizes
    assert r['category_id'] in {c['id'] for c in cats}
    assert r['segmentation']['size'] == sizes[r['image_id']]


PHOTOS = [('street.jpg', 480, 640), ('tall.png', 640, 480)]


def test_recipe_evaluates_zsi_and_gzsi(recipe, env):
  text = run('eval.py zsi,gzsi', ['eval.py', '--workdir', recipe['workdir'], '--split',
                                  'zsi,gzsi'], env)
  assert 'mAP' in text or 'map' in text.lower()
  check_evaluation(recipe['workdir'], recipe['data'], step=2)


def test_recipe_predicts_on_own_images(recipe, coco, env, tmp_path):
  out = str(tmp_path / 'predictions')
  run('predict.py', ['predict.py', '--workdir', recipe['workdir'], '--input',
                     os.path.join(coco[0], 'my_photos'), '--classes', 'cat,airplane,person',
                     '--out', out], env)
  # COCO's own ids; cat and airplane are unseen in 65/15.
  check_predictions(out, PHOTOS, [('cat', 17, True), ('airplane', 5, True),
                                  ('person', 1, False)])


MY_SPLIT = dict(name='my_split', seen=['person', 'car', 'dog', 'bicycle', 'bus', 'horse', 'bench'],
                unseen=['cat', 'airplane', 'snowboard'])
MY_EXPECTED = dict(train=['t1', 't2', 't3', 't5', 't6'], test=['v1', 'v2'], counts=dict(
    train=dict(images=5, instances=9, other_classes_dropped=1),
    test_zsi=dict(images=2, instances=2),
    test_gzsi=dict(images=2, instances=6, other_classes_dropped=2)))


def test_custom_split_walk(coco, env, tmp_path):
  """--split my_split.json with --vectors made from a word2vec file (a stand-in
  for GoogleNews), trained with the tiny config, evaluated, and asked for a
  class named in no split ('zebra') through the same word2vec file."""
  split_file = tmp_path / 'my_split.json'
  split_file.write_text(json.dumps(MY_SPLIT))
  words = MY_SPLIT['seen'] + MY_SPLIT['unseen'] + ['zebra']
  rng = np.random.default_rng(0)
  w2v = tmp_path / 'word_vectors.txt'
  w2v.write_text(f'{len(words)} 300\n' + ''.join(
      w + ' ' + ' '.join(f'{v:.5f}' for v in rng.normal(size=300)) + '\n' for w in words))
  vectors = str(tmp_path / 'my_split_vectors.txt')
  run('make_word_vectors', ['data_prep/make_word_vectors.py', '--vectors', str(w2v),
                            '--classes', str(split_file), '--out', vectors], env)
  # Without --vectors, the error names the command that makes them.
  data = str(tmp_path / 'zsi_my_split')
  text = run('make_coco_splits my_split (no vectors)',
             ['data_prep/make_coco_splits.py', '--coco_root', coco[0], '--split',
              str(split_file), '--out', data], env, expect_rc=1)
  hint = error_line(text)
  assert 'make_word_vectors.py' in hint and '--vectors' in hint
  assert not os.path.exists(data)                    # checked before writing anything
  text = make_splits(coco, env, str(split_file), data, '--vectors', vectors)
  check_split_folder(data, coco[1], MY_EXPECTED, (MY_SPLIT['seen'], MY_SPLIT['unseen']))
  np.testing.assert_allclose(np.loadtxt(os.path.join(data, 'class_vectors.txt'), delimiter=','),
                             np.loadtxt(vectors, delimiter=','))
  build = [l.strip() for l in text.splitlines() if 'make_tfds.py' in l]
  assert len(build) == 1
  run('make_tfds my_split', hinted_command(build[0]), env)
  workdir = str(tmp_path / 'run')
  run('train.py tiny on my_split',
      ['train.py', '--config', 'tests/tiny_config.py', '--workdir', workdir,
       f'--config.data.root={data}', '--config.data.pipeline=grain',
       f'--config.data.tfds_dir={data}_tfds', '--config.total_steps=2'], env)
  assert [r['step'] for r in metrics_of(workdir)] == [1, 2]
  run('eval.py tiny on my_split', ['eval.py', '--workdir', workdir, '--split', 'zsi,gzsi'], env)
  check_evaluation(workdir, data, step=2)
  out = str(tmp_path / 'predictions')
  run('predict.py tiny, a new name', ['predict.py', '--workdir', workdir, '--input',
                                      os.path.join(coco[0], 'my_photos'), '--classes',
                                      'cat,zebra', '--word_vectors', str(w2v),
                                      '--out', out], env)
  # 'zebra' gets the next free id after the split's largest (COCO's dog = 18 ... bus = 6).
  next_id = max(json.load(open(os.path.join(data, 'split.json')))['category_ids'].values()) + 1
  check_predictions(out, PHOTOS, [('cat', 17, True), ('zebra', next_id, True)])
