"""The ZSI network (paper Fig. 2): backbone -> FPN -> BA-RPN -> semantic box and mask heads.

One pure ``apply`` runs the whole method. Sync-bg is a value: the BA-RPN
returns the background word vector ``v_b`` and the model puts it in front of
the class vectors for both heads, ``[v_b; W]``. The class vectors are an
argument, ``[K_max, D]`` with a validity mask, so the same compiled function
serves seen classes in training and unseen, seen+unseen or any user list at
inference. Each stage owns its targets, loss and inference; this module only
tells the story (``modeling/build.py`` assembles the stages from a config).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsi_jax.modeling.ba_rpn import BackgroundAwareRPN
from zsi_jax.modeling.box_head import SemanticBoxHead
from zsi_jax.modeling.class_space import ClassSpace
from zsi_jax.modeling.mask_head import SemanticMaskHead
from zsi_jax.ops import postprocess


@dataclasses.dataclass(frozen=True)
class SyncBg:
  """Which heads compare with the learned ``v_b`` (else the fixed text background
  vector), and whether their losses train it (the paper: yes; the authors'
  code detaches it)."""
  det: bool
  mask: bool
  gradients: bool


class ZSIModel(nn.Module):
  """Zero-shot instance segmentation model.

  Attributes:
    backbone: images -> (C2, C3, C4, C5).
    fpn: (C2..C5) -> (P2..P6).
    rpn: the BA-RPN.
    box_head: the semantic box head (zero-shot detector).
    mask_head: the semantic mask head.
    sync_bg: Sync-bg switches.
    vocabulary_size: V > 0 when the box head routes through a fixed vocabulary
      (held here as the constant collection ``vocabulary``, saved with the
      checkpoint and never trained).
    exclusive_mask_score: > 0: at inference, a pixel claimed by the masks of two
      different objects stays with the more probable one, among detections
      scoring at least this (``postprocess.exclusive_masks``); 0: off.
  """
  backbone: nn.Module
  fpn: nn.Module
  rpn: BackgroundAwareRPN
  box_head: SemanticBoxHead
  mask_head: SemanticMaskHead
  sync_bg: SyncBg
  vocabulary_size: int
  exclusive_mask_score: float = 0.0

  def setup(self):
    if self.vocabulary_size:
      dim = len(self.rpn.background_init)
      self.vocabulary = self.variable('constants', 'vocabulary',
                                      lambda: jnp.zeros((self.vocabulary_size, dim), jnp.float32))

  def features(self, images, train: bool):
    """[B, H, W, 3] -> [P2, P3, P4, P5, P6]."""
    return list(self.fpn(self.backbone(images, train=train)))

  def background_for(self, head: str, v_b):
    """The background vector the ``'det'`` or ``'mask'`` head sees (Sync-bg)."""
    if not (self.sync_bg.det if head == 'det' else self.sync_bg.mask):
      return jnp.asarray(self.rpn.background_init, jnp.float32)
    return v_b if self.sync_bg.gradients else jax.lax.stop_gradient(v_b)

  def _vocabulary(self):
    return self.vocabulary.value if self.vocabulary_size else None

  # ---------------------------------------------------------------- training
  def losses(self, batch: Dict[str, jnp.ndarray], class_vectors, class_valid, key,
             train: bool = True, recon_scale=1.0):
    """Every loss term of Eq. 2 for a batch (the batch dict of docs/INTERFACES.md).

    Args:
      batch: fixed-shape batch dict from the input pipeline.
      class_vectors: ``[K, D]`` training (seen) class vectors, padded;
        ``class_valid`` [K] bool.
      key: PRNG key of the anchor and RoI sampling.
      train: BatchNorm mode of the backbone.
      recon_scale: multiplier of both reconstruction weights (the train
        step's optional ramp; 1 = the paper's 0.5).
    Returns:
      (dict of scalar terms and ``total``, dict of diagnostics). ``mask_bce``
      and ``mask_recon`` are values; their gradient reaches the parameters
      through ``total`` (``SemanticMaskHead.losses``).
    """
    image_hw = batch['image'].shape[1:3]
    rpn_key, roi_key = jax.random.split(key)
    features = self.features(batch['image'], train)
    rpn = self.rpn(features)
    rpn_terms, rpn_aux = self.rpn.losses(rpn, image_hw, batch, rpn_key)
    proposals, proposal_valid = self.rpn.proposals(rpn, image_hw, batch['input_hw'], train=True)

    rois = self.box_head.sample_rois(proposals, proposal_valid, batch, roi_key)
    det_space = ClassSpace.build(self.background_for('det', rpn.v_b), class_vectors, class_valid)
    det_terms = self.box_head.losses(features, rois, det_space, self._vocabulary(), recon_scale)

    mask_space = ClassSpace.build(self.background_for('mask', rpn.v_b), class_vectors, class_valid)
    mask_loss, mask_terms, mask_aux = self.mask_head.losses(features, rois, batch,
                                                            mask_space.matrix, recon_scale)

    terms = {**rpn_terms, **det_terms}
    total = sum(terms.values()) + mask_loss
    aux = dict(num_pos_rois=jnp.sum(rois['valid'] & (rois['labels'] > 0)),
               num_rois=jnp.sum(rois['valid']), **mask_aux, **rpn_aux,
               num_proposals=jnp.sum(proposal_valid), v_b_norm=jnp.linalg.norm(rpn.v_b))
    return dict(total=total, **terms, **mask_terms), aux

  # ---------------------------------------------------------------- inference
  def detect(self, images, input_hw, class_vectors, class_valid,
             seen_vectors: Optional[jnp.ndarray] = None, seen_valid: Optional[jnp.ndarray] = None,
             scoring: str = 'direct', seen_calibration=0.0):
    """Detects and segments the given classes.

    Args:
      images: ``[B, H, W, 3]`` normalised, padded images.
      input_hw: ``[B, 2]`` size of the real image inside the padding.
      class_vectors: ``[K, D]`` vectors of the classes to detect (unseen for ZSI,
        seen+unseen for GZSI, or any user list), padded; ``class_valid`` [K].
      seen_vectors, seen_valid: the training classes' vectors, needed for
        ``scoring='projected'`` and for ``seen_calibration``.
      scoring: 'direct' (the paper) or 'projected' (the authors' code).
      seen_calibration: gamma of calibrated stacking in GZSI
        (``ClassSpace.calibrate``; 0: none).
    Returns:
      dict of ``boxes`` [B, N, 4], ``scores`` [B, N], ``classes`` [B, N] (index
      into ``class_vectors``, -1 empty), ``masks`` [B, N, 28, 28] probabilities,
      ``valid`` [B, N], ``roi_index`` [B, N] (the proposal of each detection,
      -1 empty); N = the box head's ``test.max_detections``.
    """
    candidates = self.candidates(images, input_hw, class_vectors, class_valid, seen_vectors,
                                 seen_valid, scoring)
    return self.finish(candidates, input_hw, class_vectors, class_valid, seen_vectors,
                       seen_valid, scoring, seen_calibration)

  def candidates(self, images, input_hw, class_vectors, class_valid, seen_vectors=None,
                 seen_valid=None, scoring: str = 'direct'):
    """The part of ``detect`` that does not depend on ``seen_calibration``: features,
    proposals and every proposal's class scores. Returns a dict of ``features``
    (P2..P5), ``proposals`` [B, P, 4], ``proposal_valid``, ``scores`` [B, P, K],
    ``deltas`` [B, P, 4]."""
    features = self.features(images, False)
    rpn = self.rpn(features)
    proposals, proposal_valid = self.rpn.proposals(rpn, images.shape[1:3], input_hw, train=False)
    space = self._space('det', rpn.v_b, class_vectors, class_valid, seen_vectors, seen_valid)
    scores, deltas = self.box_head.class_scores(features, proposals, space, scoring,
                                                self._vocabulary())
    return dict(features=features[:4], proposals=proposals, proposal_valid=proposal_valid,
                scores=scores, deltas=deltas)

  def finish(self, candidates, input_hw, class_vectors, class_valid, seen_vectors=None,
             seen_valid=None, scoring: str = 'direct', seen_calibration=0.0):
    """Calibration, per-class NMS, the top detections and their masks (``detect``'s rest)."""
    v_b = self.rpn.background_vector()
    space = lambda head: self._space(head, v_b, class_vectors, class_valid, seen_vectors,
                                     seen_valid)
    det = self.box_head.select(candidates['proposals'], candidates['proposal_valid'],
                               space('det').calibrate(candidates['scores'], seen_calibration),
                               candidates['deltas'], input_hw)
    masks = self.mask_head.inference(candidates['features'], det, space('mask'), scoring)
    if self.exclusive_mask_score > 0:
      masks = jax.vmap(functools.partial(
          postprocess.exclusive_masks, min_score=self.exclusive_mask_score,
          same_object_iou=self.box_head.test.nms_threshold))(
              masks, det['boxes'], det['scores'], det['valid'])
    return dict(boxes=det['boxes'], scores=det['scores'], classes=det['classes'], masks=masks,
                valid=det['valid'], roi_index=det['roi_index'])

  def _space(self, head, v_b, class_vectors, class_valid, seen_vectors, seen_valid):
    return ClassSpace.build(self.background_for(head, v_b), class_vectors, class_valid,
                            seen_vectors, seen_valid)

  # ---------------------------------------------------------------- initialisation
  def initialize(self, images):
    """Creates every parameter: the feature pass, the RPN and both heads on one RoI.

    images: [B, H, W, 3] (zeros will do). Returns ``v_b``.
    """
    features = self.features(images, False)
    rpn = self.rpn(features)
    roi = jnp.zeros((images.shape[0], 1, 4), jnp.float32).at[..., 2:].set(16.0)
    self.box_head(self.box_head.pool(features, roi), vocabulary=self._vocabulary())
    self.mask_head.on_boxes(features, roi)
    return rpn.v_b
