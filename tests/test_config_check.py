"""Config checks: unknown keys with the closest known one, choices, and the range
of every numeric setting, all named by their dotted key."""
import pytest

from configs import coco_48_17, coco_65_15, shapes
from tests import tiny_config as tiny
from zsi_jax.config_check import ConfigError, validate


@pytest.mark.parametrize('module', [shapes, tiny, coco_48_17, coco_65_15])
def test_shipped_configs_are_valid(module):
  validate(module.get_config())


def test_typos_in_config_files_are_caught():
  c = shapes.get_config()
  validate(c)
  c.optim.lerning_rate = 0.1  # a config file can add keys that nothing reads
  with pytest.raises(ConfigError, match='optim.lerning_rate; did you mean optim.learning_rate'):
    validate(c)
  c = shapes.get_config()
  c.model.mask_head.chanels = 8
  with pytest.raises(ConfigError, match='model.mask_head.chanels; did you mean '
                                        'model.mask_head.channels'):
    validate(c)
  c = shapes.get_config()
  c.model.backbone.norm = 'layer_norm'
  with pytest.raises(ConfigError, match='frozen_bn, batch_norm, group_norm'):
    validate(c)


@pytest.mark.parametrize('key,value,message', [
    ('optim.learning_rate', -0.1, r'config.optim.learning_rate=-0.1: must be > 0'),
    ('total_steps', -1, r'config.total_steps=-1: must be >= 0'),
    ('data.batch_size', 0, r'config.data.batch_size=0: must be > 0'),
    ('optim.warmup_steps', -5, r'config.optim.warmup_steps=-5: must be >= 0'),
    ('optim.warmup_ratio', 0.0, r'config.optim.warmup_ratio=0.0: must be in \(0, 1\]'),
    ('optim.momentum', 1.0, r'config.optim.momentum=1.0: must be in \[0, 1\)'),
    ('model.test.score_threshold', 1.2, r'config.model.test.score_threshold=1.2: must be in'),
    ('model.test.nms_threshold', 0.0, r'config.model.test.nms_threshold=0.0: must be in'),
    ('model.rpn.targets.positive_fraction', 1.5, r'positive_fraction=1.5'),
    ('data.image_size', (128, -4), r'config.data.image_size=\(128, -4\): must be > 0'),
    ('model.anchors.ratios', (), r'config.model.anchors.ratios is empty'),
    ('checkpoint_every', 0, r'config.checkpoint_every=0: must be > 0'),
    ('model.mask_head.roi_buckets', 0, r'config.model.mask_head.roi_buckets=0: must be > 0'),
    ('optim.learning_rate', float('nan'), r'config.optim.learning_rate=nan'),
])
def test_numeric_settings_out_of_range_are_refused(key, value, message):
  c = shapes.get_config()
  c.update_from_flattened_dict({key: value})
  with pytest.raises(ConfigError, match=message):
    validate(c)


def test_thresholds_that_contradict_each_other_are_refused():
  c = shapes.get_config()
  c.model.roi_sampling.negative_threshold = 0.6
  with pytest.raises(ConfigError, match='roi_sampling.negative_threshold must not exceed'):
    validate(c)
  c = shapes.get_config()
  c.model.backbone.depth = 42
  with pytest.raises(ConfigError, match='depth=42; choose one of 18, 34, 50, 101, 152'):
    validate(c)


def test_types_come_from_the_defaults():
  # ml_collections checks a plain field's type on assignment; a sequence's
  # elements are checked here, against the default's element type.
  c = shapes.get_config()
  c.model.anchors.strides = (4.5, 8, 16, 32, 64)
  with pytest.raises(ConfigError, match=r'anchors.strides=\(4.5, 8, 16, 32, 64\): must be an '
                                        'integer'):
    validate(c)
  c = shapes.get_config()
  c.model.anchors.scales = (4,)            # an integer is a number
  validate(c)
  c.model.anchors.scales = ('large',)
  with pytest.raises(ConfigError, match='must be a number'):
    validate(c)
