"""The ZSI network (paper Fig. 2): backbone -> FPN -> BA-RPN -> semantic heads.

One pure ``apply`` runs the whole method. Sync-bg is a value: the BA-RPN
returns the background word vector ``v_b`` and this module puts it in front of
the class vectors for both heads, ``[v_b; W]``. The class vectors are an
argument, ``[K_max, D]`` with a validity mask, so the same compiled function
serves seen classes in training and unseen, seen+unseen or any user list at
inference.

Training (``ZSIModel.losses``) and inference (``ZSIModel.detect``) share the
feature and RPN code and split after the proposals, as in detectron2.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsi_jax.modeling import losses as L
from zsi_jax.modeling.ba_rpn import BackgroundAwareRPN
from zsi_jax.modeling.box_head import SemanticBoxHead
from zsi_jax.modeling.fpn import FPN
from zsi_jax.modeling.mask_head import SemanticMaskHead
from zsi_jax.modeling.resnet import ResNet
from zsi_jax.ops import anchors as anchor_ops
from zsi_jax.ops import postprocess, proposals, roi_align, targets

# Logit given to padded (invalid) class slots: far below any real score, finite
# so that softmax and its gradient stay NaN-free.
_INVALID_LOGIT = -1e9


def class_matrix(v_b, class_vectors, class_valid):
  """``[v_b; W]`` and its validity. v_b: [D]; class_vectors: [K, D] -> [1+K, D], [1+K]."""
  mat = jnp.concatenate([v_b[None, :].astype(class_vectors.dtype), class_vectors], axis=0)
  valid = jnp.concatenate([jnp.ones((1,), bool), class_valid.astype(bool)])
  return mat, valid


def masked_logits(semantic, matrix, valid):
  """Dot-product class logits with padded classes pushed to -inf-ish. [..., D] x [C, D] -> [..., C]."""
  logits = semantic @ matrix.T
  return jnp.where(valid, logits, _INVALID_LOGIT)


class ZSIModel(nn.Module):
  """Zero-shot instance segmentation model.

  Attributes:
    config: the ``model`` ConfigDict of an experiment (see configs/).
    background_init: the dataset's background word vector as a tuple of floats.
    num_train_classes: classes seen in training (sizes class-specific box
      regression only; 0 for class-agnostic).
  """
  config: Any
  background_init: Any
  num_train_classes: int = 0

  def setup(self):
    c = self.config
    dtype = jnp.bfloat16 if c.get('dtype', 'float32') == 'bfloat16' else jnp.float32
    conv_impl = c.get('conv_impl', 'auto')
    self.backbone = ResNet(depth=c.backbone.depth, width=c.backbone.width, norm=c.backbone.norm,
                           frozen_stages=c.backbone.frozen_stages, dtype=dtype,
                           conv_impl=conv_impl)
    self.fpn = FPN(channels=c.fpn_channels, conv_impl=conv_impl, dtype=dtype)
    self.rpn = BackgroundAwareRPN(background_init=tuple(self.background_init),
                                  num_anchors=len(c.anchors.ratios) * len(c.anchors.scales),
                                  channels=c.fpn_channels, semantic=c.rpn.semantic,
                                  conv_impl=conv_impl, dtype=dtype)
    dim = len(self.background_init)
    self.box_head = SemanticBoxHead(
        semantic_dim=dim, fc_dim=c.box_head.fc_dim, use_decoder=c.box_head.use_decoder,
        num_reg_classes=self.num_train_classes if c.box_head.regression == 'class_specific' else 0,
        vocabulary_size=c.box_head.vocabulary_size, dtype=dtype)
    self.mask_head = SemanticMaskHead(
        semantic_dim=dim, num_convs=c.mask_head.num_convs, channels=c.mask_head.channels,
        encoder=c.mask_head.encoder, use_decoder=c.mask_head.use_decoder,
        conv_impl=conv_impl, dtype=dtype)
    if c.box_head.vocabulary_size:
      # The fixed vocabulary word vectors (reference COCO setting) are a
      # constant collection: saved with the checkpoint, never trained.
      self.vocabulary = self.variable(
          'constants', 'vocabulary',
          lambda: jnp.zeros((c.box_head.vocabulary_size, dim), jnp.float32))

  # ---------------------------------------------------------------- shared parts
  def _features(self, images, train):
    feats = self.fpn(self.backbone(images, train=train))
    return list(feats)  # P2..P6

  def _anchors(self, image_hw):
    c = self.config.anchors
    per_level = anchor_ops.generate_anchors(tuple(image_hw), strides=tuple(c.strides),
                                            scales=tuple(c.scales), ratios=tuple(c.ratios))
    return [jnp.asarray(a) for a in per_level]

  def _sync_bg(self, v_b, which):
    """The background vector a head sees (Sync-bg, Table 5 switches)."""
    c = self.config.sync_bg
    use = c.det if which == 'det' else c.mask
    if not use:
      # Without Sync-bg the head keeps the fixed text background vector.
      return jnp.asarray(self.background_init, jnp.float32)
    return v_b if c.gradients else jax.lax.stop_gradient(v_b)

  def _proposals(self, rpn_logits, rpn_deltas, anchors, input_hw, train):
    c = self.config.rpn
    objectness = [jax.lax.stop_gradient(lg[..., 1] - lg[..., 0]) for lg in rpn_logits]
    deltas = [jax.lax.stop_gradient(d) for d in rpn_deltas]
    pre = c.pre_nms_topk_train if train else c.pre_nms_topk_test
    post = c.post_nms_topk_train if train else c.post_nms_topk_test

    def one(obj, dl, hw):
      return proposals.generate_proposals(obj, dl, anchors, hw, pre_nms_topk=pre,
                                          nms_threshold=c.nms_threshold, post_nms_topk=post,
                                          min_size=c.min_size)
    return jax.vmap(one)(objectness, deltas, input_hw)

  def _pool(self, feats, rois, size):
    """Multi-level RoIAlign over P2..P5 for a batch. rois: [B, R, 4] -> [B, R, s, s, C]."""
    levels = feats[:4]
    return jax.vmap(lambda f, r: roi_align.multilevel_roi_align(
        f, r, output_size=size, sampling_ratio=self.config.roi_align_sampling_ratio))(levels, rois)

  # ---------------------------------------------------------------- training
  def losses(self, batch: Dict[str, jnp.ndarray], class_vectors, class_valid, key,
             train: bool = True, recon_scale=1.0):
    """All loss terms of Eq. 2 for a batch (see docs/INTERFACES.md for ``batch``).

    Args:
      batch: fixed-shape batch dict from the input pipeline.
      class_vectors: ``[K, D]`` training (seen) class vectors, padded.
      class_valid: ``[K]`` bool.
      key: PRNG key for anchor and RoI sampling.
      train: BatchNorm mode for the backbone.
      recon_scale: scalar multiplier of both reconstruction weights (the
        optional ramp of the train step; 1 = the paper's 0.5).
    Returns:
      dict of scalar loss terms (``total`` included) and diagnostics. With
      more than one mask-RoI bucket and ``mask_head.fused_backward`` (the
      default), ``mask_bce`` and ``mask_recon`` are values whose gradient
      reaches the parameters through ``total`` only (``_fused_mask_loss``).
    """
    c = self.config
    images = batch['image']
    b = images.shape[0]
    image_hw = images.shape[1:3]
    feats = self._features(images, train)
    rpn_logits, rpn_deltas, v_b = self.rpn(feats)
    anchors = self._anchors(image_hw)
    all_anchors = jnp.concatenate(anchors, axis=0)
    gt_boxes, gt_classes = batch['gt_boxes'], batch['gt_classes']
    gt_valid, gt_crowd = batch['gt_valid'], batch['gt_crowd']
    input_hw = batch['input_hw']
    rpn_key, roi_key = jax.random.split(key)

    # --- BA-RPN loss: 2-way CE + smooth-L1 (beta 1/9) on sampled anchors.
    anchor_valid = jax.vmap(lambda hw: anchor_ops.anchor_validity(all_anchors, hw))(input_hw)
    rpn_cfg = targets.RpnTargetConfig(**c.rpn.targets)
    rpn_t = jax.vmap(lambda k, av, gb, gv, gc: targets.rpn_targets(
        k, all_anchors, av, gb, gv, gc, rpn_cfg))(
            jax.random.split(rpn_key, b), anchor_valid, gt_boxes, gt_valid, gt_crowd)
    logits_all = jnp.concatenate(rpn_logits, axis=1)
    deltas_all = jnp.concatenate(rpn_deltas, axis=1)
    sampled = rpn_t['labels'] >= 0
    num_sampled = jnp.sum(sampled)
    rpn_cls = L.safe_divide(L.softmax_cross_entropy(logits_all, rpn_t['labels'], sampled),
                            num_sampled)
    rpn_box = L.safe_divide(L.weighted_smooth_l1(deltas_all, rpn_t['box_targets'],
                                                 rpn_t['box_weights'], c.rpn.smooth_l1_beta),
                            num_sampled)

    # --- Proposals and RoI sampling (ground truth added to the proposals).
    props, _, props_valid = self._proposals(rpn_logits, rpn_deltas, anchors, input_hw, True)
    roi_cfg = targets.RoiSamplingConfig(**c.roi_sampling)
    roi_t = jax.vmap(lambda k, p, pv, gb, gl, gv, gc: targets.sample_rois(
        k, p, pv, gb, gl, gv, gc, roi_cfg))(
            jax.random.split(roi_key, b), props, props_valid, gt_boxes, gt_classes, gt_valid,
            gt_crowd)
    rois, roi_labels, roi_valid = roi_t['rois'], roi_t['labels'], roi_t['valid']

    # --- Zero-shot detector: CE over [v_b; W], smooth-L1, reconstruction.
    head = self.box_head(self._pool(feats, rois, 7), vocabulary=self._vocabulary())
    mat, mat_valid = class_matrix(self._sync_bg(v_b, 'det'), class_vectors, class_valid)
    cls_logits = masked_logits(head['semantic'], mat, mat_valid)
    num_rois = jnp.sum(roi_valid)
    det_cls = L.safe_divide(L.softmax_cross_entropy(cls_logits, roi_labels, roi_valid), num_rois)
    pos = roi_valid & (roi_labels > 0)
    pred_deltas = self._select_deltas(head, roi_labels - 1)
    det_box = L.safe_divide(L.weighted_smooth_l1(pred_deltas, roi_t['box_targets'], pos,
                                                 c.box_head.smooth_l1_beta), num_rois)
    det_recon = (L.reconstruction_mse(head['features'].reshape(-1, c.box_head.fc_dim),
                                      head['reconstruction'].reshape(-1, c.box_head.fc_dim),
                                      roi_valid.reshape(-1))
                 if head['reconstruction'] is not None else jnp.zeros(()))

    # --- Semantic mask head on the positive RoIs, in the smallest slot bucket
    # that holds every image's positives (one static shape per bucket; the
    # loss is the same whichever bucket runs, see mask_roi_buckets).
    mmat, _ = class_matrix(self._sync_bg(v_b, 'mask'), class_vectors, class_valid)
    sizes = mask_roi_buckets(c.mask_head.max_rois_per_image, c.mask_head.get('roi_buckets', 1))
    most = jnp.max(jnp.sum(pos, axis=1))
    bucket = jnp.sum(most > jnp.asarray(sizes[:-1], jnp.int32)).astype(jnp.int32)
    operands = (feats[:4], rois, roi_labels, pos, roi_t['matched_gt'],
                batch['gt_masks'].astype(jnp.float32), gt_boxes, mmat)
    mask_recon_weight = c.mask_head.recon_weight * recon_scale
    if len(sizes) == 1:
      mask_bce, mask_recon, num_mask_rois = self._mask_loss(*operands, n=sizes[0])
      mask_loss = mask_bce + mask_recon_weight * mask_recon
    elif c.mask_head.get('fused_backward', True) and not self.is_initializing():
      mask_loss, (mask_bce, mask_recon, num_mask_rois) = self._fused_mask_loss(
          bucket, sizes, operands, mask_recon_weight)
    else:
      # Differentiating a switch makes every branch output the residuals of
      # all branches, zero-filled where not taken: the im2col buffers of the
      # larger buckets ([2*128, 14, 14, 9*256] floats each) were written with
      # zeros every step. Rematerialised branches keep only matmul outputs
      # (im2col and the RoIAlign gathers are recomputed in the backward pass).
      branches = [nn.checkpoint(functools.partial(ZSIModel._mask_loss, n=n),
                                policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
                  for n in sizes]
      mask_bce, mask_recon, num_mask_rois = nn.switch(bucket, branches, self, *operands)
      mask_loss = mask_bce + mask_recon_weight * mask_recon

    terms = dict(rpn_cls=rpn_cls, rpn_box=rpn_box, det_cls=det_cls, det_box=det_box,
                 det_recon=c.box_head.recon_weight * recon_scale * det_recon,
                 mask_bce=mask_bce, mask_recon=mask_recon_weight * mask_recon)
    # The mask terms' sum is ``mask_loss``, which carries their gradient (the
    # fused path reports the two terms as values only).
    total = sum(v for k, v in terms.items() if not k.startswith('mask_')) + mask_loss
    aux = dict(num_pos_rois=jnp.sum(pos), num_rois=num_rois, num_mask_rois=num_mask_rois,
               mask_bucket=bucket,
               num_rpn_sampled=num_sampled, num_rpn_pos=jnp.sum(rpn_t['labels'] == 1),
               num_proposals=jnp.sum(props_valid),
               v_b_norm=jnp.linalg.norm(v_b))
    return dict(total=total, **terms), aux

  def _fused_mask_loss(self, bucket, sizes, operands, recon_weight):
    """The bucketed mask loss with its backward pass run inside the taken bucket.

    Differentiating a ``lax.switch`` makes it output the residuals of every
    branch (zero-filled where not taken), so the switch branches used to be
    rematerialised, which runs the mask head's forward pass twice. Here each
    branch computes the loss and, at once, its gradients with respect to the
    mask head's parameters, the P2-P5 features and the class matrix (the
    only inputs that depend on parameters); the backward pass only scales
    them (``switch_with_gradients``). That needs one differentiable scalar,
    so BCE and the weighted reconstruction are summed here.

    Args:
      bucket: int32 scalar, the branch to run.
      sizes: the buckets' slots per image.
      operands: ``_mask_loss``'s arguments (before ``n``).
      recon_weight: scalar weight of the reconstruction term.
    Returns:
      (``bce + recon_weight * recon``, differentiable;
      ``(bce, recon, number of mask RoIs)`` without gradients).
    """
    levels, rois, roi_labels, pos, matched_gt, gt_masks, gt_boxes, mmat = operands
    head = self.mask_head.clone(parent=None)

    def branch(n):
      def loss(diff, rest):
        params, levels, mmat = diff
        *other, weight = rest
        apply = lambda f, v: head.apply({'params': params}, f, v, residual=True)
        bce, recon, count = self._mask_loss(levels, *other, mmat, n=n, head=apply)
        return bce + weight * recon, (bce, recon, count)
      return loss

    diff = (self.mask_head.variables['params'], levels, mmat)
    rest = (rois, roi_labels, pos, matched_gt, gt_masks, gt_boxes,
            jnp.asarray(recon_weight, jnp.float32))
    loss, aux = switch_with_gradients(bucket, [branch(n) for n in sizes], diff, rest)
    return loss, jax.lax.stop_gradient(aux)

  def _mask_loss(self, levels, rois, roi_labels, pos, matched_gt, gt_masks, gt_boxes, mmat, n,
                 head=None):
    """Mask BCE and reconstruction on the first ``n`` positive RoIs of each image.

    Args:
      levels: P2..P5 ``[B, H_l, W_l, C]``.
      rois, roi_labels, pos, matched_gt: sampled RoIs ``[B, R, 4]``, their
        labels (0 background), positive flags and matched ground truth ``[B, R]``.
      gt_masks: ``[B, G, M, M]`` float box-cropped ground-truth masks.
      gt_boxes: ``[B, G, 4]``.
      mmat: ``[K+1, D]`` the mask head's ``[v_b; W]``.
      n: static slots per image (positives beyond ``n`` would be dropped, so
        callers pass ``n`` >= every image's positive count, or the cap).
      head: ``(roi_features, roi_vectors) -> dict(logits, residual)``; the
        mask head (``residual=True``) by default.
    Returns:
      (mask BCE, unweighted reconstruction MSE, number of mask RoIs).
    """
    c = self.config
    mask_idx, m_valid = jax.vmap(lambda p: _first_true(p, n))(pos)
    take = lambda x: jnp.take_along_axis(x, mask_idx.reshape(mask_idx.shape + (1,) * (x.ndim - 2)),
                                         axis=1)
    m_rois = take(rois)
    m_labels = jnp.take_along_axis(roi_labels, mask_idx, axis=1)
    m_gt = jnp.take_along_axis(matched_gt, mask_idx, axis=1)
    m_targets = jax.vmap(lambda gm, gb, r, g: targets.mask_targets(
        gm, gb, r, g, output_size=c.mask_head.mask_size))(gt_masks, gt_boxes, m_rois, m_gt)
    roi_vectors = mmat[jnp.clip(m_labels, 0, None)].reshape(-1, 1, mmat.shape[-1])
    # Only each RoI's target class is compared (the paper's per-class BCE), so
    # the head folds that vector into its encoder (no [N, 28, 28, D] map).
    if head is None:
      head = lambda f, v: self.mask_head(f, v, residual=True)
    mhead = head(self._pool(levels, m_rois, c.mask_head.roi_size).reshape(
        (-1, c.mask_head.roi_size, c.mask_head.roi_size, c.fpn_channels)), roi_vectors)
    m_logits = mhead['logits'][..., 0]
    m_valid = m_valid.reshape(-1)
    pixels = c.mask_head.mask_size ** 2
    bce = L.safe_divide(
        L.sigmoid_binary_cross_entropy(m_logits, m_targets.reshape(m_logits.shape),
                                       m_valid[:, None, None]),
        jnp.sum(m_valid) * pixels)
    recon = (L.residual_mse(mhead['residual'], m_valid)
             if mhead['residual'] is not None else jnp.zeros(()))
    return bce, recon, jnp.sum(m_valid)

  def _vocabulary(self):
    return self.vocabulary.value if self.config.box_head.vocabulary_size else None

  def _select_deltas(self, head, class_index):
    """Deltas of each RoI's class: class-specific where trained, else class-agnostic.

    head: box-head outputs for [B, R]; class_index: [B, R] in 0..K-1 (or -1).
    Returns [B, R, 4].
    """
    if head['deltas_specific'] is None:
      return head['deltas_agnostic']
    spec = head['deltas_specific']
    idx = jnp.clip(class_index, 0, spec.shape[-2] - 1)
    return jnp.take_along_axis(spec, idx[..., None, None], axis=-2)[..., 0, :]

  # ---------------------------------------------------------------- inference
  def detect(self, images, input_hw, class_vectors, class_valid,
             seen_vectors: Optional[jnp.ndarray] = None, seen_valid: Optional[jnp.ndarray] = None,
             scoring: str = 'direct'):
    """Detects and segments the given classes.

    Args:
      images: ``[B, H, W, 3]`` normalised, padded images.
      input_hw: ``[B, 2]`` size of the real image inside the padding.
      class_vectors: ``[K, D]`` vectors of the classes to detect (unseen for ZSI,
        seen+unseen for GZSI, or any user list), padded; ``class_valid`` [K].
      seen_vectors, seen_valid: the training classes' vectors, needed for
        ``scoring='projected'`` (the reference code's unseen scoring).
      scoring: 'direct' (paper: softmax over ``s . [v_b; W]``) or 'projected'.
    Returns:
      dict of ``boxes`` [B, N, 4], ``scores`` [B, N], ``classes`` [B, N] (index
      into ``class_vectors``, -1 empty), ``masks`` [B, N, 28, 28] probabilities,
      ``valid`` [B, N]; N = max_detections.
    """
    c = self.config
    feats = self._features(images, False)
    rpn_logits, rpn_deltas, v_b = self.rpn(feats)
    anchors = self._anchors(images.shape[1:3])
    props, _, props_valid = self._proposals(rpn_logits, rpn_deltas, anchors, input_hw, False)

    head = self.box_head(self._pool(feats, props, 7), vocabulary=self._vocabulary())
    mat, mat_valid = class_matrix(self._sync_bg(v_b, 'det'), class_vectors, class_valid)
    scores = self._class_scores(head['semantic'], mat, mat_valid, v_b, seen_vectors, seen_valid,
                                scoring, 'det')
    # Regression: class-agnostic for any class list (unseen classes have no
    # regressor of their own; REFERENCE.md's index accident is not repeated).
    deltas = head['deltas_agnostic']
    t = c.test
    det = jax.vmap(lambda r, rv, sc, dl, hw: postprocess.postprocess_detections(
        r, rv, sc, dl, hw, score_threshold=t.score_threshold, nms_threshold=t.nms_threshold,
        max_detections=t.max_detections, pre_nms_topk=t.pre_nms_topk))(
            props, props_valid, scores, deltas, input_hw)

    mmat, mmat_valid = class_matrix(self._sync_bg(v_b, 'mask'), class_vectors, class_valid)
    cls = jnp.clip(det['classes'], 0, None).reshape(-1) + 1
    vecs = mmat[cls][:, None]                                                # [N, 1, D]
    if scoring == 'projected':
      # Unseen classes through the seen vectors: (s W_s^T W_s) . v equals
      # s . (v W_s^T W_s) (the map is symmetric), so the projected vector
      # goes in beside the direct one. A seen target class (GZSI) keeps the
      # direct comparison it was trained with.
      ws, ws_valid = self._seen_matrix(v_b, seen_vectors, seen_valid, 'mask')
      vecs = jnp.concatenate([vecs, project_through_seen(vecs, ws, ws_valid)], axis=1)
    logits = self.mask_head(self._pool(feats, det['boxes'], c.mask_head.roi_size).reshape(
        (-1, c.mask_head.roi_size, c.mask_head.roi_size, c.fpn_channels)), vecs)['logits']
    if scoring == 'projected':
      is_seen = jnp.any(seen_target_matrix(mmat, mmat_valid, ws, ws_valid), axis=1)
      logits = jnp.where(is_seen[cls][:, None, None, None], logits[..., :1], logits[..., 1:])
    m = jax.nn.sigmoid(logits[..., 0])
    s = c.mask_head.mask_size
    return dict(boxes=det['boxes'], scores=det['scores'], classes=det['classes'],
                masks=m.reshape(det['classes'].shape + (s, s)), valid=det['valid'])

  def _seen_matrix(self, v_b, seen_vectors, seen_valid, which):
    """``[v_b; W_s]`` ``[S+1, D]`` and its validity, for ``scoring='projected'``."""
    if seen_vectors is None:
      raise ValueError("scoring='projected' needs seen_vectors (the training class vectors)")
    return class_matrix(self._sync_bg(v_b, which), seen_vectors, seen_valid)

  def _class_scores(self, semantic, mat, mat_valid, v_b, seen_vectors, seen_valid, scoring,
                    which):
    """Per-class scores without background: [B, R, D] -> [B, R, K]."""
    if scoring == 'direct':
      return jax.nn.softmax(masked_logits(semantic, mat, mat_valid), axis=-1)[..., 1:]
    if scoring == 'projected':
      ws, ws_valid = self._seen_matrix(v_b, seen_vectors, seen_valid, which)
      p = jax.nn.softmax(masked_logits(semantic, ws, ws_valid), axis=-1)
      # Probabilities mapped back into word space, then compared with the
      # targets; no renormalisation, as in the reference code.
      scores = (p @ jnp.where(ws_valid[:, None], ws, 0.0)) @ mat.T
      # A target that is a seen class (GZSI) keeps its own probability: the
      # projection would add p_bg * (v_b . w) to every class of every
      # background RoI (with one-hot vectors that alone filled the top 100
      # and sent seen recall from 63% to 1%).
      same = seen_target_matrix(mat, mat_valid, ws, ws_valid)
      scores = jnp.where(jnp.any(same, axis=1), p @ same.T.astype(p.dtype), scores)
      return jnp.where(mat_valid, scores, 0.0)[..., 1:]
    raise ValueError(f"scoring must be 'direct' or 'projected', got {scoring!r}")

  def __call__(self, images, train: bool = False):
    """Feature pass used for initialisation: returns the RPN outputs and ``v_b``."""
    feats = self._features(images, train)
    return self.rpn(feats)


def project_through_seen(semantic, ws, ws_valid):
  """Maps semantic vectors through the seen word vectors (reference code's masks).

  ``s -> (s . W_s^T) . W_s``, softmax-free; callers compare the result with
  the target vectors.

  Args:
    semantic: ``[..., D]``.
    ws, ws_valid: ``[v_b; seen]`` ``[S+1, D]`` and its validity.
  Returns:
    ``[..., D]``.
  """
  ws = jnp.where(ws_valid[:, None], ws, 0.0)
  return (semantic @ ws.T) @ ws


def seen_target_matrix(mat, mat_valid, ws, ws_valid):
  """Which target classes are seen classes: ``[K+1, S+1]`` bool.

  Args:
    mat, mat_valid: ``[v_b; targets]`` ``[K+1, D]`` and its validity.
    ws, ws_valid: ``[v_b; seen]`` ``[S+1, D]`` and its validity.
  Returns:
    ``same[t, s]``: target t has exactly seen class s's vector (background
    rows never match).
  """
  same = jnp.all(mat[:, None, :] == ws[None, :, :], axis=-1)
  same &= mat_valid[:, None] & ws_valid[None, :]
  return same.at[0, :].set(False).at[:, 0].set(False)


def mask_roi_buckets(cap: int, num_buckets: int) -> Tuple[int, ...]:
  """Slot counts the mask head may run at: ``cap`` and its halvings.

  The sampler yields at most ``cap`` positives per image (25% of 512 = 128 on
  COCO), but early in training, and on images with few objects, far fewer: the
  mask head (4 convolutions at 14x14 and their gradients) on empty slots was
  most of a CPU train step. Training picks, per batch, the smallest bucket that
  holds every image's positives, so no positive is ever dropped and the loss
  does not depend on the buckets; each bucket is one more compiled branch.

  Returns e.g. (16, 32, 64, 128) for cap 128 and 4 buckets.
  """
  return tuple(sorted({max(1, cap >> i) for i in range(max(1, num_buckets))}))


def switch_with_gradients(index, branches, diff, rest):
  """``lax.switch(index, branches, diff, rest)`` whose backward pass is computed
  in the forward pass, inside the taken branch.

  Reverse-mode differentiation of a switch makes it output the residuals of
  all branches in one common form (zero-filled for the branches not taken)
  or, rematerialised, run the taken branch's forward pass again. When the
  branches return a scalar loss that enters the objective linearly (the
  mask loss), each branch can instead return its gradient at once; the
  backward pass then only multiplies it by the incoming cotangent.

  Args:
    index: int32 scalar.
    branches: functions ``(diff, rest) -> (loss scalar, aux)``, same output
      structure.
    diff: pytree of the float arrays to differentiate.
    rest: pytree of arrays whose cotangent is zero (integer and boolean
      arrays, and values that do not depend on what is differentiated).
  Returns:
    (loss, aux). ``aux`` gets no gradient: callers must not differentiate it
    (wrap it in ``lax.stop_gradient``).
  """
  def with_grad(branch):
    return lambda d, r: jax.value_and_grad(branch, has_aux=True)(d, r)

  @jax.custom_vjp
  def run(index, diff, rest):
    return jax.lax.switch(index, branches, diff, rest)

  def fwd(index, diff, rest):                   # -> ((loss, aux), gradients as residuals)
    return jax.lax.switch(index, [with_grad(b) for b in branches], diff, rest)

  def bwd(grads, cotangent):
    g = cotangent[0]
    return None, jax.tree_util.tree_map(lambda x: (g * x).astype(x.dtype), grads), None

  run.defvjp(fwd, bwd)
  return run(index, diff, rest)


def _first_true(mask, n):
  """Indices of the first ``n`` True entries of ``mask`` [R] -> ([n] int32, [n] bool)."""
  order = jnp.argsort(~mask, stable=True)[:n]
  return order.astype(jnp.int32), mask[order]


def init_variables(model: ZSIModel, key, image_hw, batch_size=1, vocabulary=None):
  """Initialises all parameters, heads included, with dummy inputs.

  Returns the variables dict (``params`` and any ``batch_stats``/``constants``).
  """
  c = model.config
  d = len(model.background_init)
  images = jnp.zeros((batch_size,) + tuple(image_hw) + (3,), jnp.float32)

  def all_heads(module, images):
    feats = module._features(images, False)
    module.rpn(feats)
    r = jnp.zeros((batch_size, 1, 4), jnp.float32).at[..., 2:].set(16.0)
    module.box_head(module._pool(feats, r, 7), vocabulary=module._vocabulary())
    module.mask_head(module._pool(feats, r, c.mask_head.roi_size).reshape(
        (-1, c.mask_head.roi_size, c.mask_head.roi_size, c.fpn_channels)))
    return jnp.zeros((d,))

  variables = jax.jit(lambda k: model.init(k, images, method=all_heads))(key)
  variables = dict(variables)
  if c.box_head.vocabulary_size:
    if vocabulary is None:
      raise ValueError('config.model.box_head.vocabulary_size > 0 needs the vocabulary matrix')
    variables['constants'] = {'vocabulary': jnp.asarray(vocabulary, jnp.float32)}
  return variables
