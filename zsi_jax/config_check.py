"""Checks an experiment config before anything is loaded or compiled, and
completes configs saved by older versions.

A typo in a config file (``c.optim.lerning_rate``) would otherwise add a key
that nothing reads, and a wrong choice string would fail deep inside tracing:
both are reported here with the dotted key and the closest known one. The
known keys are those of ``config_defaults.base_config()``.
"""
from __future__ import annotations

import copy
import difflib
from typing import Any, Mapping

import ml_collections

from zsi_jax.config_defaults import base_config
from zsi_jax.modeling.build import CONV_IMPLS
from zsi_jax.modeling.class_space import SCORINGS
from zsi_jax.modeling.mask_head import ENCODERS

CHOICES = {
    'model.dtype': ('float32', 'bfloat16'),
    'model.backbone.norm': ('frozen_bn', 'batch_norm', 'group_norm'),
    'model.box_head.regression': ('class_agnostic', 'class_specific'),
    'model.mask_head.encoder': ENCODERS,
    'model.test.scoring': SCORINGS,
    'model.conv_impl': CONV_IMPLS,
}

# Keys of configs saved by earlier versions that no longer exist (their
# meaning is now fixed or derived), and retired values with their successor.
RETIRED_KEYS = ('model.mask_head.mask_size',        # always 2 x roi_size
                'model.mask_head.fused_backward',   # one bucketed mask loss
                'data.vocabulary')                  # was never read
RETIRED_VALUES = {('model.conv_impl', 'gemm'): 'auto', ('model.conv_impl', 'mixed'): 'auto'}


class ConfigError(ValueError):
  pass


def _walk(path: str, got: Mapping, ref: Mapping):
  known = sorted(ref)
  for k, v in got.items():
    if k not in ref:
      close = difflib.get_close_matches(k, known, n=1)
      hint = f'; did you mean {path}{close[0]}?' if close else f'; known: {", ".join(known)}'
      raise ConfigError(f'unknown config key {path}{k}{hint}')
    if isinstance(ref[k], Mapping) and isinstance(v, Mapping):
      _walk(f'{path}{k}.', v, ref[k])


def _get(config, dotted: str):
  node = config
  for part in dotted.split('.'):
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict):
  """Raises ConfigError naming the first unknown key or invalid value."""
  _walk('', config.to_dict(), base_config().to_dict())
  for dotted, choices in CHOICES.items():
    try:
      value = _get(config, dotted)
    except KeyError:
      raise ConfigError(f'config has no {dotted}') from None
    if value not in choices:
      raise ConfigError(f'config.{dotted}={value!r}; choose one of {", ".join(choices)}')
  d = config.data
  for key in ('image_size', 'scale'):
    if len(tuple(d[key])) != 2 or min(d[key]) <= 0:
      raise ConfigError(f'config.data.{key} must be two positive sizes, got {d[key]}')
  if d.batch_size <= 0:
    raise ConfigError(f'config.data.batch_size must be positive, got {d.batch_size}')
  if config.model.backbone.norm == 'group_norm' and config.init.backbone:
    raise ConfigError('config.init.backbone loads ImageNet BatchNorm weights; use '
                      "model.backbone.norm='frozen_bn' or 'batch_norm' with it")


def complete(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A config saved by this or an earlier version, brought to today's keys.

  Keys the saved config lacks take today's defaults (``base_config``), retired
  keys are dropped and retired values replaced by their successors.
  """
  saved = _drop(copy.deepcopy(dict(saved)), RETIRED_KEYS)
  config = base_config()
  _walk('', saved, config.to_dict())
  config.update_from_flattened_dict(_flatten(saved))
  for (dotted, old), new in RETIRED_VALUES.items():
    if _get(config, dotted) == old:
      config.update_from_flattened_dict({dotted: new})
  return config


def _flatten(d: Mapping, prefix: str = ''):
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def _drop(d: dict, dotted_keys):
  for dotted in dotted_keys:
    *parents, leaf = dotted.split('.')
    node = d
    for p in parents:
      node = node.get(p) if isinstance(node, Mapping) else None
    if isinstance(node, dict):
      node.pop(leaf, None)
  return d
