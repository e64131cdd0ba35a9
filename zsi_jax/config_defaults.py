"""Every setting, once: its default, what it may be, and what it means.

``SCHEMA`` is the whole experiment config as nested dicts of :class:`Key`.
``base_config()`` is its defaults (the authors' COCO model,
docs/REFERENCE_NOTES.md); the files in configs/ start from it and override
what differs. ``config_check.validate`` checks a config against it: no key
outside it, each value of its default's type (int, number, bool, string, or
a sequence of them) and within its ``allowed`` choices or range. docs/CONFIG.md
is generated from it (tools/config_doc.py). Nothing here depends on the
dataset's class count (that comes from the vector file).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import ml_collections

from zsi_jax.modeling.box_head import REGRESSIONS
from zsi_jax.modeling.build import CONV_IMPLS, DTYPES
from zsi_jax.modeling.class_space import SCORINGS
from zsi_jax.modeling.mask_head import ENCODERS
from zsi_jax.modeling.resnet import NORMS, STAGE_BLOCKS
from zsi_jax.ops.roi_align import FORMS


@dataclasses.dataclass(frozen=True)
class Range:
  """Numbers between ``low`` and ``high`` (None: unbounded), ends included or not.
  A sequence setting is checked element by element."""
  low: Optional[float] = None
  high: Optional[float] = None
  low_in: bool = True
  high_in: bool = True

  def __contains__(self, v) -> bool:
    if v != v:
      return False
    if self.low is not None and (v < self.low or (v == self.low and not self.low_in)):
      return False
    return not (self.high is not None and (v > self.high or (v == self.high and not self.high_in)))

  def __str__(self) -> str:
    if self.high is None:
      return f'{">=" if self.low_in else ">"} {self.low:g}'
    return (f'in {"[" if self.low_in else "("}{self.low:g}, {self.high:g}'
            f'{"]" if self.high_in else ")"}')


POSITIVE = Range(0, None, False)
NON_NEGATIVE = Range(0, None)
UNIT_OPEN = Range(0, 1, False, False)             # (0, 1)
UNIT_HALF_OPEN = Range(0, 1, False, True)         # (0, 1]
UNIT_CLOSED = Range(0, 1)                         # [0, 1]


@dataclasses.dataclass(frozen=True)
class Key:
  """One setting: default, allowed values (a tuple of choices, a Range, or None:
  any value of the default's type) and one line of meaning."""
  default: Any
  allowed: Union[Tuple[Any, ...], Range, None]
  doc: str


def _model() -> Dict[str, Any]:
  """The authors' COCO model (R101-FPN, BA-RPN, both decoders, Sync-bg)."""
  return dict(
      dtype=Key('float32', tuple(DTYPES),
                'computation dtype; bfloat16 keeps float32 parameters and losses'),
      conv_impl=Key('auto', CONV_IMPLS,
                    "how convolutions are computed (the same function): 'auto' picks per "
                    "backend and phase, 'conv' is XLA's everywhere, 'winograd' forces the "
                    "CPU's Winograd form"),
      backbone=dict(
          depth=Key(101, tuple(sorted(STAGE_BLOCKS)), 'ResNet depth'),
          width=Key(1.0, POSITIVE, 'channel multiplier of the ResNet'),
          norm=Key('frozen_bn', NORMS,
                   'normalisation: fixed ImageNet statistics, trained BatchNorm, or GroupNorm '
                   '(from scratch, small batches)'),
          frozen_stages=Key(1, Range(0, 4), 'stem + this many stages are not trained')),
      fpn_channels=Key(256, POSITIVE, 'FPN width'),
      anchors=dict(
          strides=Key((4, 8, 16, 32, 64), POSITIVE, 'anchor stride of each FPN level'),
          scales=Key((8.0,), POSITIVE, 'anchor sizes in strides'),
          ratios=Key((0.5, 1.0, 2.0), POSITIVE, 'anchor aspect ratios (h / w)')),
      rpn=dict(
          semantic=Key(True, None, "BA-RPN's word-vector scores and v_b (False: a plain RPN, "
                       'Table 5)'),
          pre_nms_topk_train=Key(2000, POSITIVE, 'proposals per level before NMS, training'),
          post_nms_topk_train=Key(2000, POSITIVE, 'proposals per image after NMS, training'),
          pre_nms_topk_test=Key(1000, POSITIVE, 'proposals per level before NMS, inference'),
          post_nms_topk_test=Key(1000, POSITIVE, 'proposals per image after NMS, inference'),
          nms_threshold=Key(0.7, UNIT_HALF_OPEN, 'IoU of proposal NMS'),
          min_size=Key(0.0, NON_NEGATIVE, 'proposals smaller than this (pixels) are dropped'),
          smooth_l1_beta=Key(1.0 / 9, NON_NEGATIVE, 'smooth-L1 beta of the RPN box loss'),
          targets=dict(
              positive_threshold=Key(0.7, UNIT_CLOSED, 'anchor IoU for a positive'),
              negative_threshold=Key(0.3, UNIT_CLOSED, 'anchor IoU below which it is negative'),
              allow_low_quality=Key(True, None, "each gt's best anchors count as positive"),
              low_quality_min=Key(0.3, UNIT_CLOSED, '... if their IoU reaches this'),
              num_samples=Key(256, POSITIVE, 'anchors sampled per image for the loss'),
              positive_fraction=Key(0.5, UNIT_HALF_OPEN, 'at most this share positive'))),
      roi_sampling=dict(
          positive_threshold=Key(0.5, UNIT_CLOSED, 'proposal IoU for a foreground RoI'),
          negative_threshold=Key(0.5, UNIT_CLOSED, 'proposal IoU below which it is background'),
          num_samples=Key(512, POSITIVE, 'RoIs sampled per image for the box head'),
          positive_fraction=Key(0.25, UNIT_HALF_OPEN, 'at most this share foreground')),
      roi_align_sampling_ratio=Key(2, POSITIVE, 'RoIAlign taps per bin and axis'),
      roi_align_form=Key('per_tap', FORMS,
                         "RoIAlign form (the same values and gradients): 'per_tap' never holds "
                         "every tap at once, 'gather' does"),
      box_head=dict(
          fc_dim=Key(1024, POSITIVE, 'width of the two fully connected layers'),
          use_decoder=Key(True, None, 'semantic decoder and reconstruction loss (Table 1)'),
          regression=Key('class_agnostic', REGRESSIONS, 'box regression per class or shared'),
          vocabulary_size=Key(0, NON_NEGATIVE,
                              "V words of the authors' vocabulary projection (needs "
                              'data.vocabulary); 0: none'),
          smooth_l1_beta=Key(1.0, NON_NEGATIVE, 'smooth-L1 beta of the box loss'),
          recon_weight=Key(0.5, NON_NEGATIVE, 'weight of the reconstruction loss')),
      mask_head=dict(
          num_convs=Key(4, NON_NEGATIVE, '3x3 convolutions before the deconvolution'),
          channels=Key(256, POSITIVE, 'their width'),
          encoder=Key('1x1', ENCODERS,
                      "semantic encoder: one 1x1 conv (paper) or two 3x3 (authors' code)"),
          use_decoder=Key(True, None, 'semantic decoder and reconstruction loss (Table 1)'),
          roi_size=Key(14, POSITIVE, 'RoIAlign output; the masks are twice that'),
          recon_weight=Key(0.5, NON_NEGATIVE, 'weight of the reconstruction loss'),
          max_rois_per_image=Key(128, POSITIVE, 'positive RoIs per image the mask loss takes'),
          roi_buckets=Key(4, POSITIVE,
                          'the loss runs in the smallest of this many slot buckets (cap, '
                          'cap/2, ...) holding the positives: the same loss, less work'),
          loss_piece_slots=Key(16, NON_NEGATIVE,
                               'a bucket runs in pieces of this many slots per image, one at a '
                               'time (peak memory of a piece; the same loss); 0: whole'),
          skip_empty_pieces=Key(True, None,
                                'pieces beyond the most positives of an image are skipped '
                                '(False: fixed work per step, for benchmarks)'),
          instance_logit=Key(False, None,
                             'add a class-agnostic per-pixel logit to the semantic one '
                             '(touching objects, docs/RESULTS.md)'),
          neighbour_weight=Key(1.0, NON_NEGATIVE,
                               'BCE weight of RoI pixels on another object (1: plain '
                               'background; touching objects, docs/RESULTS.md)')),
      sync_bg=dict(
          det=Key(True, None, 'the box head scores background with the learned v_b'),
          mask=Key(True, None, 'the mask head does'),
          gradients=Key(True, None,
                        "the heads' losses train v_b (paper); False: detached (authors' "
                        'code)')),
      test=dict(
          score_threshold=Key(0.05, Range(0, 1, True, False), 'detections below are dropped'),
          nms_threshold=Key(0.5, UNIT_HALF_OPEN, 'IoU of per-class NMS'),
          max_detections=Key(100, POSITIVE, 'detections per image'),
          pre_nms_topk=Key(1000, POSITIVE, 'candidates per image before NMS'),
          mask_threshold=Key(0.5, UNIT_OPEN, 'mask probability that counts as inside'),
          scoring=Key('direct', SCORINGS,
                      'unseen scores: against the unseen vectors, or projected through the '
                      'seen ones'),
          seen_calibration=Key(0.0, Range(-1, 1),
                               'GZSI calibrated stacking: seen scores lowered by this much'),
          exclusive_mask_score=Key(0.0, UNIT_CLOSED,
                                   '> 0: a pixel claimed by the masks of two objects (box IoU '
                                   'below nms_threshold), each scoring at least this, stays '
                                   'with the more probable one; 0: off')),
  )


def _schema() -> Dict[str, Any]:
  return dict(
      seed=Key(0, NON_NEGATIVE, 'seed of initialisation, sampling and the data order'),
      data=dict(
          root=Key('', None, 'a dataset root written by data_prep/'),
          vectors=Key('class_vectors.txt', None, "class-vector file inside it (authors' format)"),
          image_size=Key((1344, 1344), POSITIVE, 'the padded canvas (H, W) of every batch'),
          scale=Key((800, 1333), POSITIVE, 'keep-ratio resize limits (short, long)'),
          max_instances=Key(100, POSITIVE, 'objects per image; more are counted and reported'),
          mask_gt_size=Key(56, POSITIVE, 'ground-truth masks are cropped to their box at M x M'),
          batch_size=Key(8, POSITIVE, 'global batch, over all devices and processes'),
          pipeline=Key('threads', ('threads', 'grain'),
                       "'threads': a thread pool over the COCO files of data.root; 'grain': "
                       'the TFDS array_record dataset in data.tfds_dir'),
          tfds_dir=Key('', None, 'the dataset written by data_prep/make_tfds.py (grain)'),
          threads=Key(2, NON_NEGATIVE, 'decoding threads (per worker process under grain)'),
          workers=Key(0, NON_NEGATIVE, 'grain worker processes (0: decode in the trainer)'),
          max_classes=Key(0, NON_NEGATIVE, "rows of the padded class matrix; 0: the split's"),
          vocabulary=Key('', None,
                         'a D x V vocabulary file in data.root (make_word_vectors.py '
                         "--vocab_out) for the box head's projection; '': none")),
      model=_model(),
      init=dict(backbone=Key('', None,
                             'torchvision ImageNet ResNet weights (.pth, .npz, .safetensors); '
                             "'': from scratch")),
      optim=dict(
          learning_rate=Key(0.01, POSITIVE, 'peak learning rate (SGD)'),
          momentum=Key(0.9, Range(0, 1, True, False), 'SGD momentum'),
          weight_decay=Key(1e-4, NON_NEGATIVE, 'L2 weight decay'),
          clip_norm=Key(35.0, NON_NEGATIVE, 'global gradient-norm clip (0: none)'),
          warmup_steps=Key(500, NON_NEGATIVE, 'linear warm-up steps'),
          warmup_ratio=Key(1.0 / 3, UNIT_HALF_OPEN, 'warm-up starts at this share of the rate'),
          decay_epochs=Key((8.0, 11.0), NON_NEGATIVE,
                           'epochs (of num_epochs, stretched to total_steps) where the rate '
                           'drops'),
          decay_factor=Key(0.1, UNIT_HALF_OPEN, 'by this factor'),
          reference_batch=Key(0, NON_NEGATIVE,
                              '> 0: learning_rate is for this global batch and scales '
                              'linearly with data.batch_size'),
          recon_warmup_steps=Key(0, NON_NEGATIVE,
                                 '> 0: both reconstruction weights ramp in over this many '
                                 'steps')),
      num_epochs=Key(12, POSITIVE, 'training length in epochs'),
      total_steps=Key(0, NON_NEGATIVE, '> 0: the length in steps (the schedule stretched)'),
      log_every=Key(50, POSITIVE, 'steps between metric rows'),
      checkpoint_every=Key(2000, POSITIVE, 'steps between checkpoints'),
      keep_checkpoints=Key(3, POSITIVE, 'checkpoints kept'),
      eval_every=Key(0, NON_NEGATIVE, "> 0: seen-class eval on the 'val' split every N steps"),
      eval_images=Key(500, NON_NEGATIVE, '... on its first N images (0: all)'),
  )


SCHEMA = _schema()


def keys(schema: Mapping[str, Any] = SCHEMA, prefix: str = ''):
  """(dotted name, Key) of every setting, in the schema's order."""
  for name, value in schema.items():
    if isinstance(value, Key):
      yield prefix + name, value
    else:
      yield from keys(value, f'{prefix}{name}.')


def _defaults(schema: Mapping[str, Any]) -> Dict[str, Any]:
  return {k: v.default if isinstance(v, Key) else _defaults(v) for k, v in schema.items()}


def model_config() -> ml_collections.ConfigDict:
  """The ``model`` section's defaults."""
  return ml_collections.ConfigDict(_defaults(SCHEMA['model']))


def base_config() -> ml_collections.ConfigDict:
  """The whole experiment config's defaults: data, model, optimiser, schedule, logging."""
  return ml_collections.ConfigDict(_defaults(SCHEMA))
