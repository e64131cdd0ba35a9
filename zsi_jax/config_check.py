"""Checks an experiment config before anything is loaded or compiled, and
completes configs saved by older versions.

A typo in a config file (``c.optim.lerning_rate``) would otherwise add a key
that nothing reads, and a wrong choice string would fail deep inside tracing:
both are reported here with the dotted key and the closest known one. The
known keys, their types and allowed values are those of
``config_defaults.SCHEMA``.
"""
from __future__ import annotations

import copy
import difflib
from typing import Any, Mapping

import ml_collections

from zsi_jax.config_defaults import SCHEMA, Key, Range, base_config, keys

# Keys of configs saved by earlier versions that no longer exist (their
# meaning is now fixed or derived), and retired values with their successor.
RETIRED_KEYS = ('model.mask_head.mask_size',        # always 2 x roi_size
                'model.mask_head.fused_backward')   # one bucketed mask loss
RETIRED_VALUES = {('model.conv_impl', 'gemm'): 'auto', ('model.conv_impl', 'mixed'): 'auto'}
# Keys that were renamed: old dotted key -> new one.
RENAMED_KEYS = {'data.num_workers': 'data.threads'}


class ConfigError(ValueError):
  pass


class ResumeError(ConfigError):
  """A workdir resumed with settings that change what its steps compute."""


def _kind(default) -> str:
  """What a setting's values must be, from its default's type."""
  if isinstance(default, bool):
    return 'true or false'
  if isinstance(default, int):
    return 'an integer'
  if isinstance(default, float):
    return 'a number'
  return 'a string'


def _of_kind(v, kind: str) -> bool:
  if kind == 'true or false':
    return isinstance(v, bool)
  if kind == 'a string':
    return isinstance(v, str)
  if isinstance(v, bool):
    return False
  return isinstance(v, int) if kind == 'an integer' else isinstance(v, (int, float))


def _check(dotted: str, value, key: Key):
  """The value's type (from the default) and its choices or range."""
  is_sequence = isinstance(key.default, (tuple, list))
  if is_sequence:
    if not isinstance(value, (tuple, list)):
      raise ConfigError(f'config.{dotted}={value!r}: must be a sequence')
    if not value:
      raise ConfigError(f'config.{dotted} is empty')
  values = value if is_sequence else (value,)
  kind = _kind(key.default[0] if is_sequence else key.default)
  for v in values:
    if not _of_kind(v, kind):
      raise ConfigError(f'config.{dotted}={value!r}: must be {kind}')
    if isinstance(key.allowed, Range) and v not in key.allowed:
      raise ConfigError(f'config.{dotted}={value!r}: must be {key.allowed}')
    if isinstance(key.allowed, tuple) and v not in key.allowed:
      raise ConfigError(f'config.{dotted}={value!r}; choose one of '
                        f'{", ".join(map(str, key.allowed))}')


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
  for dotted, key in keys(SCHEMA):
    try:
      value = _get(config, dotted)
    except KeyError:
      raise ConfigError(f'config has no {dotted}') from None
    _check(dotted, value, key)
  for key in ('image_size', 'scale'):
    if len(tuple(config.data[key])) != 2:
      raise ConfigError(f'config.data.{key}={config.data[key]!r}: must be two sizes (H, W)')
  for section in ('model.rpn.targets', 'model.roi_sampling'):
    if _get(config, f'{section}.negative_threshold') > _get(config, f'{section}.positive_threshold'):
      raise ConfigError(f'config.{section}.negative_threshold must not exceed its '
                        'positive_threshold')
  if bool(config.data.vocabulary) != bool(config.model.box_head.vocabulary_size):
    raise ConfigError('config.data.vocabulary (the file) and config.model.box_head.'
                      'vocabulary_size (its V words) go together: set both or neither')
  if config.model.backbone.norm == 'group_norm' and config.init.backbone:
    raise ConfigError('config.init.backbone loads ImageNet BatchNorm weights; use '
                      "model.backbone.norm='frozen_bn' or 'batch_norm' with it")


def complete(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A config saved by this or an earlier version, brought to today's keys.

  Keys the saved config lacks take today's defaults (``base_config``), retired
  keys are dropped, renamed keys moved and retired values replaced by their
  successors.
  """
  saved = _drop(copy.deepcopy(dict(saved)), RETIRED_KEYS)
  for old, new in RENAMED_KEYS.items():
    value = _pop(saved, old)
    if value is not None:
      *parents, leaf = new.split('.')
      node = saved
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = value
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


def _pop(d: dict, dotted: str):
  """Removes and returns ``d[a][b]...`` for ``dotted`` 'a.b...' (None when absent)."""
  *parents, leaf = dotted.split('.')
  node = d
  for p in parents:
    node = node.get(p) if isinstance(node, Mapping) else None
  return node.pop(leaf, None) if isinstance(node, dict) else None


def _drop(d: dict, dotted_keys):
  for dotted in dotted_keys:
    _pop(d, dotted)
  return d


# What a resumed run may change: the length, cadences, workers, paths to the
# same data and the test-time settings. Every other key changes what a step
# computes or the order of the data, so resuming under it mixes two runs.
RESUMABLE = ('total_steps', 'num_epochs', 'log_every', 'checkpoint_every', 'keep_checkpoints',
             'eval_every', 'eval_images', 'data.root', 'data.tfds_dir', 'data.pipeline',
             'data.threads', 'data.workers', 'init.backbone', 'model.test.')


def resume_changes(saved: ml_collections.ConfigDict, new: ml_collections.ConfigDict):
  """(refused, accepted): the keys whose value differs between the config a
  workdir was trained with and ``new``, as (dotted key, saved, new) tuples."""
  before, after = _flatten(saved.to_dict()), _flatten(new.to_dict())
  refused, accepted = [], []
  for key in sorted(set(before) | set(after)):
    a, b = before.get(key), after.get(key)
    if _plain(a) == _plain(b):
      continue
    resumable = any(key == r or (r.endswith('.') and key.startswith(r)) for r in RESUMABLE)
    (accepted if resumable else refused).append((key, a, b))
  return refused, accepted


def _plain(value):
  """Tuples and lists alike (a saved config's lists are tuples after loading)."""
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value
