"""Checkpoints and configs: a workdir written by an earlier version (commit
0804213, before the redesign) still loads and gives the detections it gave
then; configs are completed to today's keys."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from zsi_jax import checkpoint as ckpt_lib
from zsi_jax import config_check
from zsi_jax.config_defaults import base_config
from zsi_jax.modeling.build import build_model
from zsi_jax.modeling.zsi import ZSIModel

FIXTURE = os.path.join(os.path.dirname(__file__), 'fixtures', 'workdir_0804213')


def test_workdir_of_an_earlier_version_loads_and_detects_the_same(tmp_path):
  # tiny config, 2 training steps, two mask-RoI buckets; detect_outputs.npz
  # holds the old code's detections of one fixed image.
  workdir = str(tmp_path / 'w')
  shutil.copytree(FIXTURE, workdir)
  config = ckpt_lib.load_config(workdir)
  with open(os.path.join(FIXTURE, 'config.json')) as f:
    saved = json.load(f)
  assert 'fused_backward' in saved['model']['mask_head']       # a retired key, dropped
  assert 'fused_backward' not in config.model.mask_head
  config_check.validate(config)
  variables, step = ckpt_lib.restore_variables(workdir)
  assert step == 2
  old = np.load(os.path.join(FIXTURE, 'detect_outputs.npz'))
  model = build_model(config.model, old['background'], 36, training=False)
  det = jax.jit(lambda v: model.apply(v, old['image'], old['input_hw'], old['class_vectors'],
                                      old['class_valid'], method=ZSIModel.detect))(variables)
  valid = np.asarray(det['valid'])
  np.testing.assert_array_equal(valid, old['det_valid'])
  assert valid.sum() > 0
  np.testing.assert_array_equal(np.asarray(det['classes']), old['det_classes'])
  for key in ('boxes', 'scores', 'masks'):
    np.testing.assert_allclose(np.asarray(det[key]), old[f'det_{key}'], rtol=1e-4, atol=1e-5,
                               err_msg=key)


def test_complete_fills_missing_keys_and_rejects_unknown_ones():
  saved = base_config().to_dict()
  del saved['optim']['recon_warmup_steps']
  saved['model']['conv_impl'] = 'gemm'                           # a retired value
  c = config_check.complete(saved)
  assert c.optim.recon_warmup_steps == base_config().optim.recon_warmup_steps
  assert c.model.conv_impl == 'auto'
  saved['model']['mask_head']['chanels'] = 8
  with pytest.raises(config_check.ConfigError, match='model.mask_head.chanels'):
    config_check.complete(saved)


def test_restore_variables_without_checkpoint_names_the_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match='no checkpoint'):
    ckpt_lib.restore_variables(str(tmp_path))
