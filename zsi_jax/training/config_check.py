"""Checks an experiment config before anything is loaded or compiled.

A typo in a config file (``c.optim.lerning_rate``) would otherwise add a new
key that nothing reads; a wrong choice string would fail deep inside tracing.
Both are reported here with the dotted path and the closest known key.
"""
from __future__ import annotations

import difflib
from typing import Iterable, Mapping

import ml_collections

from zsi_jax.config_defaults import model_config
from zsi_jax.modeling.layers import IMPLS as CONV_IMPLS

TOP_LEVEL = {'seed', 'data', 'model', 'init', 'optim', 'num_epochs', 'total_steps', 'log_every',
             'checkpoint_every', 'keep_checkpoints', 'eval_every', 'eval_images'}
DATA = {'root', 'vectors', 'image_size', 'scale', 'max_instances', 'mask_gt_size', 'batch_size',
        'num_workers', 'max_classes', 'vocabulary'}
OPTIM = {'learning_rate', 'momentum', 'weight_decay', 'clip_norm', 'warmup_steps', 'warmup_ratio',
         'decay_epochs', 'decay_factor', 'reference_batch', 'recon_warmup_steps'}
INIT = {'backbone'}
CHOICES = {
    'model.dtype': ('float32', 'bfloat16'),
    'model.backbone.norm': ('frozen_bn', 'batch_norm', 'group_norm'),
    'model.box_head.regression': ('class_agnostic', 'class_specific'),
    'model.test.scoring': ('direct', 'projected'),
    'model.conv_impl': ('auto',) + CONV_IMPLS,
}


class ConfigError(ValueError):
  pass


def _unknown(path: str, keys: Iterable[str], known: Iterable[str]):
  known = sorted(known)
  for k in keys:
    if k not in known:
      close = difflib.get_close_matches(k, known, n=1)
      hint = f'; did you mean {path}{close[0]}?' if close else f'; known: {", ".join(known)}'
      raise ConfigError(f'unknown config key {path}{k}{hint}')


def _walk(path: str, got: Mapping, ref: Mapping):
  _unknown(path, got.keys(), ref.keys())
  for k, v in got.items():
    if isinstance(ref.get(k), Mapping) and isinstance(v, Mapping):
      _walk(f'{path}{k}.', v, ref[k])


def _get(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict):
  """Raises ConfigError naming the first unknown key or invalid value."""
  _unknown('', config.keys(), TOP_LEVEL)
  for name in ('data', 'model', 'optim'):
    if name not in config:
      raise ConfigError(f'config has no {name!r} section')
  _unknown('data.', config.data.keys(), DATA)
  _unknown('optim.', config.optim.keys(), OPTIM)
  if 'init' in config:
    _unknown('init.', config.init.keys(), INIT)
  _walk('model.', config.model.to_dict(), model_config().to_dict())
  for dotted, choices in CHOICES.items():
    try:
      value = _get(config, dotted)
    except KeyError:
      continue
    if value not in choices:
      raise ConfigError(f'config.{dotted}={value!r}; choose one of {", ".join(choices)}')
  d = config.data
  for key in ('image_size', 'scale'):
    if len(tuple(d[key])) != 2 or min(d[key]) <= 0:
      raise ConfigError(f'config.data.{key} must be two positive sizes, got {d[key]}')
  if d.batch_size <= 0:
    raise ConfigError(f'config.data.batch_size must be positive, got {d.batch_size}')
  if config.model.backbone.norm == 'group_norm' and config.get('init', {}).get('backbone'):
    raise ConfigError('config.init.backbone loads ImageNet BatchNorm weights; use '
                      "model.backbone.norm='frozen_bn' or 'batch_norm' with it")
