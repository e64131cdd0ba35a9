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
from zsi_jax.modeling.resnet import STAGE_BLOCKS
from zsi_jax.ops import roi_align

CHOICES = {
    'model.dtype': ('float32', 'bfloat16'),
    'model.backbone.norm': ('frozen_bn', 'batch_norm', 'group_norm'),
    'model.box_head.regression': ('class_agnostic', 'class_specific'),
    'model.mask_head.encoder': ENCODERS,
    'model.test.scoring': SCORINGS,
    'model.conv_impl': CONV_IMPLS,
    'model.roi_align_form': roi_align.FORMS,
    'data.pipeline': ('threads', 'grain'),
}

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


# Numeric settings and the range each must lie in: (low, high, low inclusive,
# high inclusive); None is unbounded. Sequences are checked element by element.
_ANY = (None, None, True, True)
POSITIVE = (0, None, False, True)
NON_NEGATIVE = (0, None, True, True)
UNIT_OPEN = (0, 1, False, False)           # (0, 1)
UNIT_HALF_OPEN = (0, 1, False, True)       # (0, 1]
UNIT_CLOSED = (0, 1, True, True)           # [0, 1]
RANGES = {
    'seed': NON_NEGATIVE,
    'data.image_size': POSITIVE, 'data.scale': POSITIVE, 'data.max_instances': POSITIVE,
    'data.mask_gt_size': POSITIVE, 'data.batch_size': POSITIVE, 'data.threads': NON_NEGATIVE,
    'data.workers': NON_NEGATIVE,
    'data.max_classes': NON_NEGATIVE,
    'model.backbone.width': POSITIVE, 'model.backbone.frozen_stages': (0, 4, True, True),
    'model.fpn_channels': POSITIVE,
    'model.anchors.strides': POSITIVE, 'model.anchors.scales': POSITIVE,
    'model.anchors.ratios': POSITIVE,
    'model.rpn.pre_nms_topk_train': POSITIVE, 'model.rpn.post_nms_topk_train': POSITIVE,
    'model.rpn.pre_nms_topk_test': POSITIVE, 'model.rpn.post_nms_topk_test': POSITIVE,
    'model.rpn.nms_threshold': UNIT_HALF_OPEN, 'model.rpn.min_size': NON_NEGATIVE,
    'model.rpn.smooth_l1_beta': NON_NEGATIVE,
    'model.rpn.targets.positive_threshold': UNIT_CLOSED,
    'model.rpn.targets.negative_threshold': UNIT_CLOSED,
    'model.rpn.targets.low_quality_min': UNIT_CLOSED,
    'model.rpn.targets.num_samples': POSITIVE,
    'model.rpn.targets.positive_fraction': UNIT_HALF_OPEN,
    'model.roi_sampling.positive_threshold': UNIT_CLOSED,
    'model.roi_sampling.negative_threshold': UNIT_CLOSED,
    'model.roi_sampling.num_samples': POSITIVE,
    'model.roi_sampling.positive_fraction': UNIT_HALF_OPEN,
    'model.roi_align_sampling_ratio': POSITIVE,
    'model.box_head.fc_dim': POSITIVE, 'model.box_head.vocabulary_size': NON_NEGATIVE,
    'model.box_head.smooth_l1_beta': NON_NEGATIVE, 'model.box_head.recon_weight': NON_NEGATIVE,
    'model.mask_head.num_convs': NON_NEGATIVE, 'model.mask_head.channels': POSITIVE,
    'model.mask_head.roi_size': POSITIVE, 'model.mask_head.recon_weight': NON_NEGATIVE,
    'model.mask_head.max_rois_per_image': POSITIVE, 'model.mask_head.roi_buckets': POSITIVE,
    'model.mask_head.loss_piece_slots': NON_NEGATIVE,
    'model.mask_head.neighbour_weight': NON_NEGATIVE,
    'model.test.score_threshold': (0, 1, True, False), 'model.test.nms_threshold': UNIT_HALF_OPEN,
    'model.test.max_detections': POSITIVE, 'model.test.pre_nms_topk': POSITIVE,
    'model.test.mask_threshold': UNIT_OPEN, 'model.test.seen_calibration': (-1, 1, True, True),
    'optim.learning_rate': POSITIVE, 'optim.momentum': (0, 1, True, False),
    'optim.weight_decay': NON_NEGATIVE, 'optim.clip_norm': NON_NEGATIVE,
    'optim.warmup_steps': NON_NEGATIVE, 'optim.warmup_ratio': UNIT_HALF_OPEN,
    'optim.decay_epochs': NON_NEGATIVE, 'optim.decay_factor': UNIT_HALF_OPEN,
    'optim.reference_batch': NON_NEGATIVE, 'optim.recon_warmup_steps': NON_NEGATIVE,
    'num_epochs': POSITIVE, 'total_steps': NON_NEGATIVE, 'log_every': POSITIVE,
    'checkpoint_every': POSITIVE, 'keep_checkpoints': POSITIVE, 'eval_every': NON_NEGATIVE,
    'eval_images': NON_NEGATIVE,
}
INTEGERS = {'seed', 'data.image_size', 'data.scale', 'data.max_instances', 'data.mask_gt_size',
            'data.batch_size', 'data.threads', 'data.workers', 'data.max_classes', 'model.backbone.depth',
            'model.backbone.frozen_stages', 'model.fpn_channels', 'model.anchors.strides',
            'model.rpn.pre_nms_topk_train', 'model.rpn.post_nms_topk_train',
            'model.rpn.pre_nms_topk_test', 'model.rpn.post_nms_topk_test',
            'model.rpn.targets.num_samples', 'model.roi_sampling.num_samples',
            'model.roi_align_sampling_ratio', 'model.box_head.fc_dim',
            'model.box_head.vocabulary_size', 'model.mask_head.num_convs',
            'model.mask_head.channels', 'model.mask_head.roi_size',
            'model.mask_head.max_rois_per_image', 'model.mask_head.roi_buckets',
            'model.mask_head.loss_piece_slots', 'model.test.max_detections', 'model.test.pre_nms_topk', 'optim.warmup_steps',
            'optim.reference_batch', 'optim.recon_warmup_steps', 'num_epochs', 'total_steps',
            'log_every', 'checkpoint_every', 'keep_checkpoints', 'eval_every', 'eval_images'}


def _range_text(low, high, low_in, high_in) -> str:
  if high is None:
    return f'{">=" if low_in else ">"} {low}'
  return f'in {"[" if low_in else "("}{low}, {high}{"]" if high_in else ")"}'


def _check_number(dotted: str, value, bounds, integer: bool):
  values = value if isinstance(value, (tuple, list)) else (value,)
  if isinstance(value, (tuple, list)) and not values:
    raise ConfigError(f'config.{dotted} is empty')
  low, high, low_in, high_in = bounds
  for v in values:
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type:
      kind = 'an integer' if integer else 'a number'
      raise ConfigError(f'config.{dotted}={value!r}: must be {kind}')
    if v != v or (low is not None and (v < low or (v == low and not low_in))) or \
       (high is not None and (v > high or (v == high and not high_in))):
      raise ConfigError(f'config.{dotted}={value!r}: must be {_range_text(*bounds)}')


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
  for dotted, bounds in RANGES.items():
    _check_number(dotted, _get(config, dotted), bounds, dotted in INTEGERS)
  for key in ('image_size', 'scale'):
    if len(tuple(config.data[key])) != 2:
      raise ConfigError(f'config.data.{key}={config.data[key]!r}: must be two sizes (H, W)')
  for section in ('model.rpn.targets', 'model.roi_sampling'):
    if _get(config, f'{section}.negative_threshold') > _get(config, f'{section}.positive_threshold'):
      raise ConfigError(f'config.{section}.negative_threshold must not exceed its '
                        'positive_threshold')
  depths = sorted(STAGE_BLOCKS)
  if config.model.backbone.depth not in depths:
    raise ConfigError(f'config.model.backbone.depth={config.model.backbone.depth!r}; choose one '
                      f'of {", ".join(map(str, depths))}')
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
