"""The builder: the config becomes explicit module fields, and the convolution
forms are chosen once per backend and per training or inference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import coco_65_15, shapes
from tests import tiny_config as tiny
from zsi_jax.modeling import cpu_kernels, layers
from zsi_jax.modeling.build import build_model, conv_forms


def _compute(module_def):
  """The ``compute`` function a layer type was given (its default when none)."""
  return module_def(8).compute


@pytest.mark.parametrize('training', [True, False])
def test_conv_forms_per_backend(training):
  for backend in ('gpu', 'tpu'):
    forms = conv_forms('auto', training, backend)
    assert _compute(forms.conv3x3) is layers.conv3x3_direct
    assert _compute(forms.conv1x1) is layers.conv1x1_direct
    assert forms.matmul is jnp.matmul
  cpu_form = cpu_kernels.conv3x3_cpu_training if training else cpu_kernels.conv3x3_cpu_inference
  cpu = conv_forms('auto', training, 'cpu')
  assert _compute(cpu.conv1x1) is cpu_kernels.conv1x1_cpu
  assert cpu.matmul is cpu_kernels.channel_matmul
  assert _compute(cpu.conv3x3) is cpu_form
  plain = conv_forms('conv', training, 'cpu')
  assert _compute(plain.conv3x3) is layers.conv3x3_direct
  assert _compute(conv_forms('winograd', training, 'gpu').conv3x3) is cpu_form
  with pytest.raises(ValueError, match="conv_impl must be one of"):
    conv_forms('gemm', training, 'cpu')


def test_build_model_takes_the_config_fields():
  c = shapes.get_config().model
  bg = np.linspace(-1, 1, 7)
  model = build_model(c, bg, num_train_classes=36, training=True, backend='cpu')
  assert model.rpn.background_init == tuple(bg.tolist())
  assert model.rpn.anchors.per_location == 3 and model.rpn.channels == 64
  assert model.rpn.train_proposals.post_nms_topk == 300
  assert model.rpn.targets.num_samples == c.rpn.targets.num_samples
  assert model.box_head.sampling.num_samples == 64 and model.box_head.fc_dim == 256
  assert model.box_head.num_reg_classes == 0       # class-agnostic regression
  assert model.box_head.test.max_detections == 100
  assert model.mask_head.slot_buckets == (1, 2, 4, 8) and model.mask_head.mask_size == 28
  assert model.mask_head.channels == 32 and model.mask_head.semantic_dim == 7
  assert model.backbone.depth == 18 and model.fpn.channels == 64
  # Every module of the model got the same convolution forms.
  assert model.mask_head.conv3x3 is model.fpn.conv3x3 is model.backbone.conv3x3
  c.box_head.regression = 'class_specific'
  assert build_model(c, bg, 36, training=False).box_head.num_reg_classes == 36


def test_one_checkpoint_serves_training_and_inference_models():
  # The forms differ, the parameters do not.
  from zsi_jax.modeling.build import init_variables
  c = tiny.get_config().model
  bg = np.zeros(8)
  shapes_of = lambda training: jax.tree_util.tree_map(
      lambda a: a.shape, jax.eval_shape(lambda k: init_variables(
          build_model(c, bg, 3, training=training, backend='cpu'), k, (64, 64)),
          jax.random.PRNGKey(0)))
  assert shapes_of(True) == shapes_of(False)


def test_coco_configs_build():
  c = coco_65_15.get_config()
  model = build_model(c.model, np.zeros(300), 65, training=True)
  assert model.backbone.depth == 101 and model.backbone.frozen_stages == 1
  assert model.mask_head.slot_buckets == (16, 32, 64, 128)
