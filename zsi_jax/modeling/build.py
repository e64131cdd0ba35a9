"""From an experiment config to a model: explicit module fields, implementations chosen once.

The ConfigDict stops here. ``build_model`` turns ``config.model`` into the
stages' fields and resolves how convolutions are computed, once, for the
backend and for training or inference (the same parameters either way, so
one checkpoint serves both); ``init_variables`` makes the parameters.
Training, evaluation and inference all build their model through this module.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from zsi_jax.modeling import buckets, cpu_kernels, layers
from zsi_jax.modeling.ba_rpn import AnchorConfig, BackgroundAwareRPN, ProposalConfig
from zsi_jax.modeling.box_head import REGRESSIONS, BoxTestConfig, SemanticBoxHead
from zsi_jax.modeling.fpn import FPN
from zsi_jax.modeling.mask_head import SemanticMaskHead
from zsi_jax.modeling.resnet import ResNet
from zsi_jax.modeling.zsi import SyncBg, ZSIModel
from zsi_jax.ops.targets import RoiSamplingConfig, RpnTargetConfig

CONV_IMPLS = ('auto', 'conv', 'winograd')
# config.model.dtype -> computation dtype (parameters and losses stay float32).
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ConvForms:
  """The convolution layers every module of one model is built with, and the
  matmul over channels of the mask head's deconvolution and folded coder."""
  conv1x1: Any
  conv3x3: Any
  matmul: Any = jnp.matmul


def conv_forms(conv_impl: str, training: bool, backend: Optional[str] = None) -> ConvForms:
  """How the model's convolutions are computed (docs/PERFORMANCE.md has the measurements).

  ``'auto'``: XLA's convolutions on GPUs and TPUs. On the CPU, 1x1
  convolutions and the other matmuls over channels by
  ``cpu_kernels.channel_matmul`` (a cheaper kernel gradient), and 3x3
  convolutions by Winograd F(4x4, 3x3) where ``cpu_kernels.winograd_pays``
  (enough multiply-adds and output tiles per call), the fastest form there
  forward and backward; elsewhere, for training XLA's convolution with GEMM
  kernel gradients (the convolution's own kernel gradient is several times
  slower inside the mask loss's bucket switch), for inference XLA's
  convolution. ``'conv'``: XLA's convolutions everywhere.
  ``'winograd'``: the CPU forms on any backend.
  """
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f'model.conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}')
  backend = backend or jax.default_backend()
  if conv_impl == 'conv' or (conv_impl == 'auto' and backend != 'cpu'):
    return ConvForms(layers.Conv1x1, layers.Conv3x3)
  conv3x3 = cpu_kernels.conv3x3_cpu_training if training else cpu_kernels.conv3x3_cpu_inference
  return ConvForms(functools.partial(layers.Conv1x1, compute=cpu_kernels.conv1x1_cpu),
                   functools.partial(layers.Conv3x3, compute=conv3x3), cpu_kernels.channel_matmul)


def build_model(model: ml_collections.ConfigDict, background: Sequence[float],
                num_train_classes: int, training: bool, backend: Optional[str] = None) -> ZSIModel:
  """The ZSI model of ``config.model``.

  Args:
    model: the ``model`` section of an experiment config.
    background: the dataset's background word vector [D].
    num_train_classes: seen classes (sizes class-specific box regression).
    training: choose the convolution forms for training (else for inference).
    backend: 'cpu', 'gpu' or 'tpu' (default: JAX's default backend).
  """
  dtype = DTYPES[model.dtype]
  convs = conv_forms(model.conv_impl, training, backend)
  conv = dict(conv1x1=convs.conv1x1, conv3x3=convs.conv3x3, dtype=dtype)
  background = tuple(float(x) for x in np.asarray(background).reshape(-1))
  rpn, box, mask = model.rpn, model.box_head, model.mask_head
  proposals = lambda phase: ProposalConfig(
      pre_nms_topk=rpn[f'pre_nms_topk_{phase}'], post_nms_topk=rpn[f'post_nms_topk_{phase}'],
      nms_threshold=rpn.nms_threshold, min_size=rpn.min_size)
  return ZSIModel(
      backbone=ResNet(depth=model.backbone.depth, width=model.backbone.width,
                      norm=model.backbone.norm, frozen_stages=model.backbone.frozen_stages,
                      **conv),
      fpn=FPN(channels=model.fpn_channels, **conv),
      rpn=BackgroundAwareRPN(
          background_init=background,
          anchors=AnchorConfig(strides=tuple(model.anchors.strides),
                               scales=tuple(model.anchors.scales),
                               ratios=tuple(model.anchors.ratios)),
          channels=model.fpn_channels, semantic=rpn.semantic,
          targets=RpnTargetConfig(**rpn.targets), smooth_l1_beta=rpn.smooth_l1_beta,
          train_proposals=proposals('train'), test_proposals=proposals('test'), **conv),
      box_head=SemanticBoxHead(
          semantic_dim=len(background), fc_dim=box.fc_dim, use_decoder=box.use_decoder,
          num_reg_classes=num_train_classes if box.regression == REGRESSIONS[1] else 0,
          vocabulary_size=box.vocabulary_size, roi_size=7,
          sampling_ratio=model.roi_align_sampling_ratio, roi_align_form=model.roi_align_form,
          sampling=RoiSamplingConfig(**model.roi_sampling), smooth_l1_beta=box.smooth_l1_beta,
          recon_weight=box.recon_weight,
          test=BoxTestConfig(score_threshold=model.test.score_threshold,
                             nms_threshold=model.test.nms_threshold,
                             max_detections=model.test.max_detections,
                             pre_nms_topk=model.test.pre_nms_topk),
          dtype=dtype),
      mask_head=SemanticMaskHead(
          semantic_dim=len(background), num_convs=mask.num_convs, channels=mask.channels,
          encoder=mask.encoder, use_decoder=mask.use_decoder, roi_size=mask.roi_size,
          sampling_ratio=model.roi_align_sampling_ratio, recon_weight=mask.recon_weight,
          slot_buckets=buckets.slot_buckets(mask.max_rois_per_image, mask.roi_buckets),
          loss_piece_slots=mask.loss_piece_slots, skip_empty_pieces=mask.skip_empty_pieces,
          instance_logit=mask.instance_logit, neighbour_weight=mask.neighbour_weight,
          roi_align_form=model.roi_align_form,
          conv3x3=convs.conv3x3, matmul=convs.matmul, dtype=dtype),
      sync_bg=SyncBg(det=model.sync_bg.det, mask=model.sync_bg.mask,
                     gradients=model.sync_bg.gradients),
      vocabulary_size=box.vocabulary_size, exclusive_mask_score=model.test.exclusive_mask_score)


def init_variables(model: ZSIModel, key, image_hw, batch_size: int = 1, vocabulary=None):
  """Every variable of ``model`` for images of ``image_hw``.

  Returns the variables dict (``params`` and any ``batch_stats`` /
  ``constants``); ``vocabulary`` [V, D] fills the constant vocabulary when the
  box head uses one.
  """
  images = jnp.zeros((batch_size,) + tuple(image_hw) + (3,), jnp.float32)
  variables = dict(jax.jit(lambda k: model.init(k, images, method=ZSIModel.initialize))(key))
  if model.vocabulary_size:
    if vocabulary is None:
      raise ValueError('model.box_head.vocabulary_size > 0 needs the vocabulary matrix')
    variables['constants'] = {'vocabulary': jnp.asarray(vocabulary, jnp.float32)}
  return variables
