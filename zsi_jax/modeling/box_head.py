"""Zero-shot detector: the semantic box head (paper Sec. 3.2.1, Fig. 3), its
RoI targets, losses and box inference.

RoI feature -> 2 x FC = ``x`` -> ``T_e`` -> semantic vector ``s`` [D]; class
logits are ``s . [v_b; W]^T`` against fixed word vectors. The decoder ``T_d``
maps ``s`` back to ``x`` for the reconstruction loss (training only).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsi_jax.modeling import losses as L
from zsi_jax.modeling.class_space import ClassSpace
from zsi_jax.modeling.poolers import pool_rois
from zsi_jax.ops import postprocess
from zsi_jax.ops import targets

# config.model.box_head.regression: one box delta for all classes, or one per seen class.
REGRESSIONS = ('class_agnostic', 'class_specific')


@dataclasses.dataclass(frozen=True)
class BoxTestConfig:
  """Box post-processing: score threshold, per-class NMS, detections kept,
  candidates before NMS."""
  score_threshold: float
  nms_threshold: float
  max_detections: int
  pre_nms_topk: int


class SemanticBoxHead(nn.Module):
  """Semantic box head.

  Attributes:
    semantic_dim: word-vector dimension D.
    fc_dim: width of the two shared FC layers.
    use_decoder: build ``T_d`` (Table 1, "Det Decoder").
    num_reg_classes: 0 for class-agnostic box regression; otherwise the number
      of training classes, each with its own regressor (trained alongside the
      class-agnostic one, which every class uses at test time).
    vocabulary_size: V > 0 routes ``T_e`` through a fixed vocabulary matrix
      (the authors' COCO setting); the matrix is an argument.
    roi_size: RoIAlign output size (7).
    sampling_ratio: RoIAlign taps per bin and axis.
    roi_align_form: the RoIAlign form (``ops.roi_align.FORMS``; equal values).
    sampling: RoI sampling of training.
    smooth_l1_beta: transition of the box loss.
    recon_weight: weight of the reconstruction loss.
    test: post-processing settings.
    dtype: computation dtype.
  """
  semantic_dim: int
  fc_dim: int
  use_decoder: bool
  num_reg_classes: int
  vocabulary_size: int
  roi_size: int
  sampling_ratio: int
  sampling: targets.RoiSamplingConfig
  smooth_l1_beta: float
  recon_weight: float
  test: BoxTestConfig
  roi_align_form: str = 'gather'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, roi_features, vocabulary: Optional[jnp.ndarray] = None) -> Dict[str, Any]:
    """Runs the head on pooled RoI features.

    Args:
      roi_features: ``[..., 7, 7, C]`` RoIAlign output.
      vocabulary: ``[V, D]`` fixed vocabulary word vectors when
        ``vocabulary_size > 0``.
    Returns:
      dict with ``semantic`` [..., D] (float32), ``features`` [..., fc_dim] (the
      reconstruction target ``x``), ``reconstruction`` [..., fc_dim] or None,
      ``deltas_agnostic`` [..., 4] and ``deltas_specific`` [..., num_reg_classes, 4]
      (or None).
    """
    lead = roi_features.shape[:-3]
    x = roi_features.reshape(lead + (-1,)).astype(self.dtype)
    x = nn.relu(nn.Dense(self.fc_dim, dtype=self.dtype, name='fc1')(x))
    x = nn.relu(nn.Dense(self.fc_dim, dtype=self.dtype, name='fc2')(x))

    s = nn.Dense(self.semantic_dim, dtype=self.dtype, name='T_e')(x)
    if self.vocabulary_size:
      if vocabulary is None or vocabulary.shape[0] != self.vocabulary_size:
        raise ValueError(f'box head expects a vocabulary of {self.vocabulary_size} words, '
                         f'got {None if vocabulary is None else vocabulary.shape}')
      voc = vocabulary.astype(self.dtype)
      # Similarities to V known words, then a learned map back to word space.
      s = nn.Dense(self.semantic_dim, dtype=self.dtype, name='vocabulary_to_semantic')(s @ voc.T)

    reconstruction = None
    if self.use_decoder:
      r = s
      if self.vocabulary_size:
        r = nn.Dense(self.vocabulary_size, dtype=self.dtype, name='semantic_to_vocabulary')(r) @ voc
      reconstruction = nn.Dense(self.fc_dim, dtype=self.dtype, name='T_d')(r).astype(jnp.float32)

    init = nn.initializers.normal(0.001)
    deltas_agnostic = nn.Dense(4, kernel_init=init, dtype=self.dtype, name='box_agnostic')(x)
    deltas_specific = None
    if self.num_reg_classes:
      deltas_specific = nn.Dense(4 * self.num_reg_classes, kernel_init=init, dtype=self.dtype,
                                 name='box_specific')(x)
      deltas_specific = deltas_specific.reshape(lead + (self.num_reg_classes, 4)).astype(jnp.float32)
    return dict(semantic=s.astype(jnp.float32), features=x.astype(jnp.float32),
                reconstruction=reconstruction,
                deltas_agnostic=deltas_agnostic.astype(jnp.float32),
                deltas_specific=deltas_specific)

  def pool(self, features, rois):
    """RoIAlign of ``rois`` [B, R, 4] from P2..P5 -> [B, R, 7, 7, C]."""
    return pool_rois(features, rois, self.roi_size, self.sampling_ratio, self.roi_align_form)

  # ---------------------------------------------------------------- training
  def sample_rois(self, proposals, proposal_valid, batch, key) -> Dict[str, jnp.ndarray]:
    """Training RoIs: proposals plus ground truth, matched and sampled per image.

    Returns ``ops.targets.sample_rois``' dict with a batch axis: ``rois``
    [B, S, 4], ``labels`` [B, S] (0 background, k+1 class k, -1 empty slot),
    ``matched_gt``, ``box_targets``, ``valid``.
    """
    keys = jax.random.split(key, proposals.shape[0])
    return jax.vmap(lambda k, p, pv, gb, gl, gv, gc: targets.sample_rois(
        k, p, pv, gb, gl, gv, gc, self.sampling))(
            keys, proposals, proposal_valid, batch['gt_boxes'], batch['gt_classes'],
            batch['gt_valid'], batch['gt_crowd'])

  def losses(self, features, rois: Dict[str, jnp.ndarray], space: ClassSpace,
             vocabulary=None, recon_scale=1.0) -> Dict[str, jnp.ndarray]:
    """Cross-entropy over ``[v_b; W]``, smooth-L1 on positives, reconstruction.

    Args:
      features: P2..P5 [B, H_l, W_l, C].
      rois: :meth:`sample_rois`' output.
      space: the seen classes' space.
      vocabulary: [V, D] or None.
      recon_scale: multiplier of ``recon_weight`` (the train step's ramp).
    Returns:
      dict(det_cls, det_box, det_recon), each averaged over the sampled RoIs.
    """
    head = self(self.pool(features, rois['rois']), vocabulary=vocabulary)
    labels, valid = rois['labels'], rois['valid']
    count = jnp.sum(valid)
    det_cls = L.safe_divide(L.softmax_cross_entropy(space.logits(head['semantic']), labels, valid),
                            count)
    pos = valid & (labels > 0)
    det_box = L.safe_divide(L.weighted_smooth_l1(self._training_deltas(head, labels - 1),
                                                 rois['box_targets'], pos, self.smooth_l1_beta),
                            count)
    det_recon = (L.reconstruction_mse(head['features'].reshape(-1, self.fc_dim),
                                      head['reconstruction'].reshape(-1, self.fc_dim),
                                      valid.reshape(-1))
                 if head['reconstruction'] is not None else jnp.zeros(()))
    return dict(det_cls=det_cls, det_box=det_box,
                det_recon=self.recon_weight * recon_scale * det_recon)

  def _training_deltas(self, head, class_index):
    """Each RoI's deltas: its class's regressor where class-specific, else the shared one.

    class_index: [B, R] in 0..K-1 (or -1) -> [B, R, 4].
    """
    if head['deltas_specific'] is None:
      return head['deltas_agnostic']
    spec = head['deltas_specific']
    idx = jnp.clip(class_index, 0, spec.shape[-2] - 1)
    return jnp.take_along_axis(spec, idx[..., None, None], axis=-2)[..., 0, :]

  # ---------------------------------------------------------------- inference
  def class_scores(self, features, proposals, space: ClassSpace, scoring: str, vocabulary=None):
    """Inference: per-class scores [B, P, K] of the proposals (background removed,
    ``ClassSpace.scores``: 'direct' or 'projected') and class-agnostic deltas [B, P, 4].

    Every class uses the class-agnostic regressor at test time (unseen classes
    have no regressor of their own; the authors' code reused seen class j's for
    unseen class j by index).
    """
    head = self(self.pool(features, proposals), vocabulary=vocabulary)
    return space.scores(head['semantic'], scoring), head['deltas_agnostic']

  def select(self, proposals, proposal_valid, scores, deltas, input_hw) -> Dict[str, jnp.ndarray]:
    """Inference: score threshold, per-class NMS and the top ``test.max_detections``
    per image (``ops.postprocess.postprocess_detections``, vmapped).

    Args:
      proposals [B, P, 4], proposal_valid [B, P]; scores [B, P, K]; deltas
      [B, P, 4]; input_hw [B, 2].
    Returns:
      dict of ``boxes`` [B, N, 4], ``scores`` [B, N], ``classes`` [B, N] (index
      into the class list, -1 empty), ``roi_index``, ``valid`` [B, N].
    """
    t = self.test
    return jax.vmap(lambda r, rv, sc, dl, hw: postprocess.postprocess_detections(
        r, rv, sc, dl, hw, score_threshold=t.score_threshold, nms_threshold=t.nms_threshold,
        max_detections=t.max_detections, pre_nms_topk=t.pre_nms_topk))(
            proposals, proposal_valid, scores, deltas, input_hw)
