"""GZSI calibration: the sweep runs the model once per image and equals separate
evaluations at the same gammas; its file, curve and picture."""
import json
import os
import shutil

import numpy as np
import pytest

from zsi_jax.evaluation import runner

from tests.scripts import tiny_shapes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, 'tests', 'fixtures', 'workdir_0804213')


@pytest.fixture(scope='module')
def workdir_and_data(tmp_path_factory):
  base = tmp_path_factory.mktemp('calibration')
  data = tiny_shapes(base / 'data', num_train=4)
  workdir = str(base / 'run')
  shutil.copytree(FIXTURE, workdir)
  # Score threshold 0: every class of every proposal competes for the top 10,
  # so the calibration visibly moves detections between seen and unseen.
  config_file = os.path.join(workdir, 'config.json')
  with open(config_file) as f:
    config = json.load(f)
  config['model']['test']['score_threshold'] = 0.0
  with open(config_file, 'w') as f:
    json.dump(config, f)
  return workdir, data


def test_sweep_equals_separate_evaluations(workdir_and_data):
  workdir, data = workdir_and_data
  sweep = runner.calibration_sweep(workdir, 3, data_root=data, log=lambda *_: None)
  assert sweep['box']['gammas'] == [-1.0, 0.0, 1.0]
  for gamma, i in ((-1.0, 0), (0.0, 1), (1.0, 2)):
    m = runner.evaluate(workdir, 'gzsi', data_root=data, calibration=gamma, log=lambda *_: None)
    for kind in ('box', 'mask'):
      for key, name in (('seen_map@0.5', 'seen_map'), ('unseen_map@0.5', 'unseen_map'),
                        ('hm_map@0.5', 'hm_map'), ('seen_recall@100', 'seen_recall'),
                        ('unseen_recall@100', 'unseen_recall')):
        np.testing.assert_allclose(sweep[kind][name][i], m[kind][key], err_msg=(gamma, kind, key))
  # gamma 1: no seen class is detected; gamma -1: no unseen class.
  for kind in ('box', 'mask'):
    c = sweep[kind]
    assert c['seen_recall'][2] == 0.0 and c['unseen_recall'][0] == 0.0
    assert 0.0 <= c['ausuc_map'] <= 1.0
    assert c['best_hm_map'] == max(h for h in c['hm_map'] if h == h)
  out = os.path.join(workdir, 'eval')
  with open(os.path.join(out, 'gzsi_calibration.json')) as f:
    saved = json.load(f)
  assert saved['mask']['ausuc_map'] == sweep['mask']['ausuc_map']
  assert os.path.getsize(os.path.join(out, 'gzsi_calibration.png')) > 1000


def test_zsi_ignores_the_calibration(workdir_and_data):
  # No seen class among ZSI's targets: any gamma gives the same detections.
  workdir, data = workdir_and_data
  a = runner.evaluate(workdir, 'zsi', data_root=data, calibration=0.0, log=lambda *_: None)
  b = runner.evaluate(workdir, 'zsi', data_root=data, calibration=-1.0, log=lambda *_: None)
  same = lambda x, y: json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)  # NaN-aware
  assert same(a['box'], b['box']) and same(a['mask'], b['mask'])


def test_evaluation_reports_touching_and_apart_objects(workdir_and_data):
  # The touching objects of ZSI are found among all objects of the image
  # (the GZSI file), checked here with scipy's dilation.
  from pycocotools import mask as mask_utils
  from scipy import ndimage
  workdir, data = workdir_and_data
  m = runner.evaluate(workdir, 'zsi', data_root=data, log=lambda *_: None)
  with open(os.path.join(data, 'annotations', 'test_zsi.json')) as f:
    zsi = json.load(f)
  with open(os.path.join(data, 'annotations', 'test_gzsi.json')) as f:
    everything = json.load(f)['annotations']
  decoded = {a['id']: mask_utils.decode(a['segmentation']).astype(bool) for a in everything}
  touching = 0
  for a in zsi['annotations']:
    grown = ndimage.binary_dilation(decoded[a['id']], structure=np.ones((3, 3), bool))
    touching += any((grown & decoded[b['id']]).any() for b in everything
                    if b['image_id'] == a['image_id'] and b['id'] != a['id'])
  for kind in ('box', 'mask'):
    c = m['contact'][kind]
    assert c['touching']['objects'] == touching
    assert c['apart']['objects'] == len(zsi['annotations']) - touching
  assert touching > 0 and len(zsi['annotations']) - touching > 0
  assert 'touching' in runner.format_table(m)
