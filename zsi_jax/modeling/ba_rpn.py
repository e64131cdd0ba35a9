"""Background-Aware RPN (paper Sec. 3.2.3, Fig. 5): head, anchor targets, loss, proposals.

The BA-RPN replaces the RPN's objectness classifier by a visual-semantic one:
shared conv3x3 -> ``T`` (1x1 conv to the word-vector dimension D) -> dot
products with learned word vectors ``W_bf`` (one background and one foreground
vector per anchor shape, no bias). The background rows are the learned
background word vector: their mean is ``v_b``, which Sync-bg hands to the box
and mask heads as a value inside the same ``apply``.

With ``semantic=False`` it is a plain RPN (Table 5, "RPN"): a 1x1 conv to two
logits per anchor, and ``v_b`` is the dataset's fixed background vector.
"""
from __future__ import annotations

import dataclasses
from typing import List, NamedTuple, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsi_jax.modeling import losses as L
from zsi_jax.modeling.layers import Conv1x1, Conv3x3, ModuleDef
from zsi_jax.ops import anchors as anchor_ops
from zsi_jax.ops import proposals as proposal_ops
from zsi_jax.ops import targets


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
  """FPN anchors: one level per stride, ``scales x ratios`` anchors per location."""
  strides: Tuple[int, ...]
  scales: Tuple[float, ...]
  ratios: Tuple[float, ...]

  @property
  def per_location(self) -> int:
    return len(self.scales) * len(self.ratios)


@dataclasses.dataclass(frozen=True)
class ProposalConfig:
  """Per-level top-k before NMS, NMS threshold, proposals kept, smallest side."""
  pre_nms_topk: int
  post_nms_topk: int
  nms_threshold: float
  min_size: float


class RpnOutputs(NamedTuple):
  """logits: per level [B, N_l, 2] (background, foreground); deltas: per level
  [B, N_l, 4]; v_b: [D] the background word vector."""
  logits: List[jnp.ndarray]
  deltas: List[jnp.ndarray]
  v_b: jnp.ndarray


class BackgroundAwareRPN(nn.Module):
  """BA-RPN shared over FPN levels, with its training targets and its proposals.

  Attributes:
    background_init: the dataset's background word vector ``[D]`` (a tuple, so
      the module stays hashable); the background rows of ``W_bf`` start here.
    anchors: the anchor layout.
    channels: width of the shared conv3x3.
    semantic: BA-RPN (True) or a plain RPN (False).
    targets: anchor labelling and sampling.
    smooth_l1_beta: transition of the box loss.
    train_proposals, test_proposals: proposal settings in training and at test.
    conv1x1, conv3x3: convolution layers.
    dtype: computation dtype.
  """
  background_init: Sequence[float]
  anchors: AnchorConfig
  channels: int
  semantic: bool
  targets: targets.RpnTargetConfig
  smooth_l1_beta: float
  train_proposals: ProposalConfig
  test_proposals: ProposalConfig
  conv1x1: ModuleDef = Conv1x1
  conv3x3: ModuleDef = Conv3x3
  dtype: jnp.dtype = jnp.float32

  def setup(self):
    init = nn.initializers.normal(0.01)
    self.conv = self.conv3x3(self.channels, kernel_init=init, dtype=self.dtype, name='conv')
    conv1x1 = lambda n, name: self.conv1x1(n, kernel_init=init, dtype=self.dtype, name=name)
    num_anchors = self.anchors.per_location
    self.box_deltas = conv1x1(4 * num_anchors, 'box_deltas')
    dim = len(self.background_init)
    if self.semantic:
      # T: visual features -> semantic space.
      self.semantic_projection = conv1x1(dim, 'T')

      def w_bf_init(key, shape, dtype=jnp.float32):
        # Background rows = the text background vector; foreground rows random,
        # at the scale of the class vectors so both start comparable.
        bg = jnp.broadcast_to(jnp.asarray(self.background_init, dtype), shape[:1] + shape[2:])
        norm = jnp.linalg.norm(jnp.asarray(self.background_init, dtype))
        fg = jax.random.normal(key, bg.shape, dtype)
        fg = fg / jnp.linalg.norm(fg, axis=-1, keepdims=True) * jnp.maximum(norm, 1e-3)
        return jnp.stack([bg, fg], axis=1)

      # [A, 2, D]: per anchor shape a background (index 0) and a foreground word vector.
      self.word_vectors = self.param('W_bf', w_bf_init, (num_anchors, 2, dim))
    else:
      self.objectness = conv1x1(2 * num_anchors, 'objectness')

  def background_vector(self):
    """The background word vector ``v_b`` [D] float32 (learned or fixed)."""
    if self.semantic:
      return jnp.mean(self.word_vectors[:, 0, :], axis=0).astype(jnp.float32)
    return jnp.asarray(self.background_init, jnp.float32)

  def __call__(self, features) -> RpnOutputs:
    """Scores the anchors of every level: features, list of ``[B, H_l, W_l, C]``."""
    logits, deltas = [], []
    for x in features:
      b = x.shape[0]
      h = nn.relu(self.conv(x))
      if self.semantic:
        # Plain dot products of T(h) with W_bf, no normalisation or temperature
        # (as the authors' code). Both are linear, so they fold into one
        # [C, 2A] matrix and the [B, H, W, D] projection is never built.
        w = self.word_vectors.reshape(-1, self.word_vectors.shape[-1])           # [A*2, D]
        lg = self.semantic_projection(h, then=w.T)                               # [B,H,W,A*2]
      else:
        lg = self.objectness(h)
      logits.append(lg.reshape(b, -1, 2).astype(jnp.float32))
      deltas.append(self.box_deltas(h).reshape(b, -1, 4).astype(jnp.float32))
    return RpnOutputs(logits, deltas, self.background_vector())

  def anchor_boxes(self, image_hw) -> List[jnp.ndarray]:
    """Anchors of the padded canvas ``image_hw``, per level ``[N_l, 4]`` (constants)."""
    a = self.anchors
    per_level = anchor_ops.generate_anchors(tuple(image_hw), strides=a.strides, scales=a.scales,
                                            ratios=a.ratios)
    return [jnp.asarray(x) for x in per_level]

  # ---------------------------------------------------------------- training
  def losses(self, out: RpnOutputs, image_hw, batch, key):
    """2-way cross-entropy and smooth-L1 on sampled anchors, averaged over them.

    Args:
      out: this module's outputs.
      image_hw: (H, W) of the padded canvas.
      batch: the batch dict (``input_hw``, ``gt_boxes``, ``gt_valid``, ``gt_crowd``).
      key: PRNG key of the anchor sampling.
    Returns:
      (dict(rpn_cls, rpn_box), dict(num_rpn_sampled, num_rpn_pos)).
    """
    all_anchors = jnp.concatenate(self.anchor_boxes(image_hw), axis=0)
    anchor_valid = jax.vmap(lambda hw: anchor_ops.anchor_validity(all_anchors, hw))(
        batch['input_hw'])
    keys = jax.random.split(key, batch['gt_boxes'].shape[0])
    t = jax.vmap(lambda k, av, gb, gv, gc: targets.rpn_targets(
        k, all_anchors, av, gb, gv, gc, self.targets))(
            keys, anchor_valid, batch['gt_boxes'], batch['gt_valid'], batch['gt_crowd'])
    logits = jnp.concatenate(out.logits, axis=1)
    deltas = jnp.concatenate(out.deltas, axis=1)
    sampled = t['labels'] >= 0
    count = jnp.sum(sampled)
    rpn_cls = L.safe_divide(L.softmax_cross_entropy(logits, t['labels'], sampled), count)
    rpn_box = L.safe_divide(L.weighted_smooth_l1(deltas, t['box_targets'], t['box_weights'],
                                                 self.smooth_l1_beta), count)
    return (dict(rpn_cls=rpn_cls, rpn_box=rpn_box),
            dict(num_rpn_sampled=count, num_rpn_pos=jnp.sum(t['labels'] == 1)))

  # ---------------------------------------------------------------- proposals
  def proposals(self, out: RpnOutputs, image_hw, input_hw, train: bool):
    """Per-level top-k, decode, clip, NMS, merge (no gradient into the RPN).

    Args:
      out: this module's outputs.
      image_hw: (H, W) of the padded canvas.
      input_hw: [B, 2] size of each real image inside it.
      train: training or test settings.
    Returns:
      boxes [B, P, 4], valid [B, P] bool; P = post_nms_topk.
    """
    cfg = self.train_proposals if train else self.test_proposals
    anchors = self.anchor_boxes(image_hw)
    objectness = [jax.lax.stop_gradient(lg[..., 1] - lg[..., 0]) for lg in out.logits]
    deltas = [jax.lax.stop_gradient(d) for d in out.deltas]

    def one(obj, dl, hw):
      return proposal_ops.generate_proposals(
          obj, dl, anchors, hw, pre_nms_topk=cfg.pre_nms_topk, nms_threshold=cfg.nms_threshold,
          post_nms_topk=cfg.post_nms_topk, min_size=cfg.min_size)
    boxes, _, valid = jax.vmap(one)(objectness, deltas, input_hw)
    return boxes, valid
