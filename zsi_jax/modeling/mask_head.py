"""Semantic Mask Head (paper Sec. 3.2.2, Fig. 4), its mask targets, loss and mask inference.

RoI feature 14x14 -> convs 3x3 -> deconv x2 -> 28x28 visual map ``O`` ->
encoder ``E`` -> D-channel semantic map; per-pixel logits are dot products with
``[v_b; W]`` (the fixed ``W``-Conv). The decoder ``D`` maps the semantic map
back to ``O`` for the reconstruction loss (training only).

Training compares each positive RoI with its ground-truth class only (the
paper's per-class BCE) and inference each detection with its detected class,
so the head takes one word vector per RoI; with the paper's 1x1 encoder that
vector folds into the encoder and the [N, 28, 28, D] map is never built.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from zsi_jax.modeling import buckets
from zsi_jax.modeling import losses as L
from zsi_jax.modeling.class_space import ClassSpace
from zsi_jax.modeling.layers import Conv3x3, Deconv2x, Linear, ModuleDef
from zsi_jax.modeling.poolers import pool_rois
from zsi_jax.ops import targets

ENCODERS = ('1x1', 'conv3x3')


class SemanticMaskHead(nn.Module):
  """Semantic mask head.

  Attributes:
    semantic_dim: word-vector dimension D.
    num_convs: conv3x3 layers before the deconvolution (all applied; the
      authors' code applied only the last).
    channels: their width.
    encoder: '1x1' (the paper: one 1x1 conv) or 'conv3x3' (the authors' code:
      conv3x3 + ReLU + conv3x3).
    use_decoder: build ``D`` (Table 1, "SMH Decoder").
    roi_size: RoIAlign output size (14); the masks are twice that.
    sampling_ratio: RoIAlign taps per bin and axis.
    roi_align_form: the RoIAlign form (``ops.roi_align.FORMS``; equal values).
    recon_weight: weight of the reconstruction loss.
    slot_buckets: positive-RoI slots per image the training loss may run at
      (``buckets.slot_buckets``); the largest is the cap.
    loss_piece_slots: a bucket's loss runs in pieces of at most this many slots
      per image, one after another (its peak memory is a piece's); 0: whole.
    skip_empty_pieces: run only the pieces up to the most positives of an
      image (else every piece of the bucket: a fixed cost per step).
    instance_logit: add a class-agnostic per-pixel logit (a 1x1 map of ``O``,
      zero at initialisation) to every class's semantic logit: a notion of
      "this instance" that does not come from the word vector.
    neighbour_weight: BCE weight of the RoI pixels that lie on another
      ground-truth object (their target is 0, as for the background; 1: the
      paper's plain BCE).
    conv3x3: the 3x3 convolution layer.
    matmul: ``(x [..., C], kernel [C, O]) -> [..., O]``, the deconvolution's and
      the folded coder's matmul over channels.
    dtype: computation dtype.
  """
  semantic_dim: int
  num_convs: int
  channels: int
  encoder: str
  use_decoder: bool
  roi_size: int
  sampling_ratio: int
  recon_weight: float
  slot_buckets: Tuple[int, ...]
  loss_piece_slots: int = 0
  skip_empty_pieces: bool = True
  instance_logit: bool = False
  neighbour_weight: float = 1.0
  roi_align_form: str = 'gather'
  conv3x3: ModuleDef = Conv3x3
  matmul: Callable[..., Any] = jnp.matmul
  dtype: Any = jnp.float32

  @property
  def mask_size(self) -> int:
    return 2 * self.roi_size

  def _coder(self, x, out_dim, name):
    """Encoder ``E`` or decoder ``D``: [N, m, m, C] -> [N, m, m, out_dim]."""
    if self.encoder == '1x1':
      # A 1x1 convolution as a Dense over channels (its kernel gradient is one GEMM).
      return Linear(out_dim, x.shape[-1], dtype=self.dtype, name=name)(x)
    if self.encoder == 'conv3x3':
      conv = lambda i: self.conv3x3(out_dim, dtype=self.dtype, name=f'{name}_{i}')
      return conv(1)(nn.relu(conv(0)(x)))
    raise ValueError(f'mask head encoder must be one of {ENCODERS}, got {self.encoder!r}')

  def _folded(self, x, then, residual):
    """Logits and reconstruction error of the 1x1 coders without the D-channel map.

    ``E`` and ``D`` are affine with nothing in between, so the logits are
    ``O . (K_E v) + b_E . v`` and ``D(E(O)) - O = O (K_E K_D - I) + (b_E K_D
    + b_D)``: one C x C matmul per pixel instead of C -> D -> C. The same
    functions of the same parameters, gradients included.
    x: [N, m, m, C]; then: [N, D, K] -> ([N, m, m, K], [N, m, m, C] float32 or None).
    """
    c = x.shape[-1]
    enc = Linear(self.semantic_dim, c, dtype=self.dtype, name='E')
    logits = enc(x, then)
    if not residual:
      return logits, None
    k_e, b_e = enc.affine()
    k_d, b_d = Linear(c, self.semantic_dim, dtype=self.dtype, name='D').affine()
    folded = (k_e @ k_d - jnp.eye(c, dtype=k_e.dtype)).astype(self.dtype)
    return logits, (self.matmul(x, folded) + (b_e @ k_d + b_d).astype(self.dtype)).astype(jnp.float32)

  @nn.compact
  def __call__(self, roi_features, roi_vectors=None, residual: bool = False) -> Dict[str, Any]:
    """Runs the head.

    Args:
      roi_features: ``[N, 14, 14, C]`` RoIAlign output.
      roi_vectors: None, or ``[N, K, D]`` word vectors per RoI.
      residual: with ``roi_vectors``, also return the reconstruction error.
    Returns:
      without ``roi_vectors``: dict with ``semantic`` [N, 28, 28, D] float32,
      ``features`` [N, 28, 28, channels] (the reconstruction target) and
      ``reconstruction`` (same shape, or None);
      with ``instance_logit`` also ``instance`` [N, 28, 28, 1] float32;
      with ``roi_vectors``: dict with ``logits`` [N, 28, 28, K] float32, the
      per-pixel dot products ``semantic . roi_vectors`` (plus the instance
      logit), and with
      ``residual=True`` also ``residual`` [N, 28, 28, channels] float32,
      ``reconstruction - features`` (None without the decoder).
    """
    x = roi_features.astype(self.dtype)
    init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
    for i in range(self.num_convs):
      x = nn.relu(self.conv3x3(self.channels, kernel_init=init, dtype=self.dtype,
                               name=f'conv{i + 1}')(x))
    x = nn.relu(Deconv2x(self.channels, kernel_init=init, matmul=self.matmul, dtype=self.dtype,
                         name='deconv')(x))
    instance = None
    if self.instance_logit:
      instance = Linear(1, self.channels, kernel_init=nn.initializers.zeros, dtype=self.dtype,
                        name='instance')(x).astype(jnp.float32)
    if roi_vectors is None:
      e = self._coder(x, self.semantic_dim, 'E')
      reconstruction = None
      if self.use_decoder:
        reconstruction = self._coder(e, self.channels, 'D').astype(jnp.float32)
      out = dict(semantic=e.astype(jnp.float32), features=x.astype(jnp.float32),
                 reconstruction=reconstruction)
      if instance is not None:
        out['instance'] = instance
      return out
    then = jnp.swapaxes(roi_vectors, 1, 2).astype(self.dtype)               # [N, D, K]
    with_residual = residual and self.use_decoder
    if self.encoder == '1x1':
      logits, res = self._folded(x, then, with_residual)
    else:
      e = self._coder(x, self.semantic_dim, 'E')
      logits = jnp.einsum('nhwd,ndk->nhwk', e, then)
      res = (self._coder(e, self.channels, 'D').astype(jnp.float32) - x.astype(jnp.float32)
             if with_residual else None)
    logits = logits.astype(jnp.float32)
    out = dict(logits=logits if instance is None else logits + instance)
    if residual:
      out['residual'] = res
    return out

  def on_boxes(self, features, boxes, vectors=None, residual: bool = False):
    """Pools ``boxes`` [B, R, 4] from P2..P5 and runs the head on them, against one
    word vector per box (``vectors`` [B*R, D]) or, without vectors, to the semantic map."""
    r = self.roi_size
    pooled = pool_rois(features, boxes, r, self.sampling_ratio, self.roi_align_form)
    return self(pooled.reshape((-1, r, r, pooled.shape[-1])),
                None if vectors is None else vectors[:, None, :], residual=residual)

  # ---------------------------------------------------------------- training
  def losses(self, features, rois: Dict[str, jnp.ndarray], batch, class_matrix,
             recon_scale=1.0):
    """Mask BCE on the ground-truth class channel and reconstruction, on the positive RoIs.

    The loss runs in the smallest slot bucket that holds every image's
    positives, in pieces of at most ``loss_piece_slots`` slots per image, one
    piece at a time and (``skip_empty_pieces``) only those holding positives, with its gradients
    computed inside each piece
    (``buckets.switch_with_gradients``). So the returned loss carries the
    gradient of both terms, and the two terms are reported values.

    Args:
      features: P2..P5 [B, H_l, W_l, C].
      rois: the box head's sampled RoIs (``rois``, ``labels``, ``valid``,
        ``matched_gt``).
      batch: the batch dict (``gt_masks`` [B, G, M, M], ``gt_boxes``).
      class_matrix: [1+K, D] ``[v_b; W]`` as this head sees it.
      recon_scale: multiplier of ``recon_weight`` (the train step's ramp).
    Returns:
      (loss, dict(mask_bce, mask_recon) weighted values, dict(num_mask_rois,
      mask_bucket, mask_slots: the slots per image the loss ran on)).
    """
    pos = rois['valid'] & (rois['labels'] > 0)
    bucket = buckets.smallest_bucket(jnp.sum(pos, axis=1), self.slot_buckets)
    weight = self.recon_weight * recon_scale
    diff = (list(features[:4]), class_matrix)
    rest = (rois['rois'], rois['labels'], pos, rois['matched_gt'],
            batch['gt_masks'].astype(jnp.float32), batch['gt_boxes'], batch['gt_valid'],
            jnp.asarray(weight, jnp.float32))
    pieces = [buckets.pieces(n, self.loss_piece_slots) for n in self.slot_buckets]
    branches = [functools.partial(SemanticMaskHead._loss_in_slots, slots=n, piece_size=size)
                for n, (_, size) in zip(self.slot_buckets, pieces)]
    # Pieces beyond the most positives of an image hold none: they need not run.
    most = jnp.max(jnp.sum(pos, axis=1))
    active = [jnp.clip((most + size - 1) // size, 1, count) if self.skip_empty_pieces
              else jnp.asarray(count) for count, size in pieces]
    loss, (bce, recon, count) = buckets.switch_with_gradients(
        self, bucket, branches, diff, rest, pieces=[count for count, _ in pieces],
        active_pieces=active)
    slots = jnp.stack([a * size for a, (_, size) in zip(active, pieces)])[bucket]
    return (loss, dict(mask_bce=bce, mask_recon=weight * recon),
            dict(num_mask_rois=count, mask_bucket=bucket, mask_slots=slots))

  def _loss_in_slots(self, diff, rest, slots: int, piece_size: int, piece):
    """One piece of the loss on the first ``slots`` positive RoIs of each image
    (a bucket's branch): slots ``[piece * piece_size, (piece + 1) * piece_size)``.

    Both terms are divided by the bucket's count of mask RoIs, so the pieces
    add up to the bucket's loss. Returns (bce + weight * recon, (bce,
    unweighted recon, number of mask RoIs in this piece)).
    """
    features, class_matrix = diff
    rois, labels, pos, matched_gt, gt_masks, gt_boxes, gt_valid, weight = rest
    padded = -(-slots // piece_size) * piece_size          # the pieces cover the bucket
    index, valid = jax.vmap(lambda p: _first_true(p, padded))(pos)
    valid = valid & (jnp.arange(index.shape[1]) < slots)
    count = jnp.sum(valid)
    index, valid = (jax.lax.dynamic_slice_in_dim(x, piece * piece_size, piece_size, axis=1)
                    for x in (index, valid))
    take = lambda x: jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)),
                                         axis=1)
    m_rois = take(rois)
    m_labels = jnp.take_along_axis(labels, index, axis=1)
    m_gt = jnp.take_along_axis(matched_gt, index, axis=1)
    m_targets = jax.vmap(lambda gm, gb, r, g: targets.mask_targets(
        gm, gb, r, g, output_size=self.mask_size))(gt_masks, gt_boxes, m_rois, m_gt)
    vectors = class_matrix[jnp.clip(m_labels, 0, None)].reshape(-1, class_matrix.shape[-1])
    head = self.on_boxes(features, m_rois, vectors, residual=True)
    logits = head['logits'][..., 0]
    valid = valid.reshape(-1)
    weights = valid[:, None, None].astype(jnp.float32)
    if self.neighbour_weight != 1.0:
      neighbours = jax.vmap(lambda gm, gb, gv, r, g: targets.neighbour_targets(
          gm, gb, gv, r, g, output_size=self.mask_size))(gt_masks, gt_boxes, gt_valid, m_rois, m_gt)
      on_neighbour = neighbours.reshape(logits.shape) * (1.0 - m_targets.reshape(logits.shape))
      weights = weights * (1.0 + (self.neighbour_weight - 1.0) * on_neighbour)
    bce = L.safe_divide(
        L.sigmoid_binary_cross_entropy(logits, m_targets.reshape(logits.shape), weights),
        count * self.mask_size ** 2)
    recon = (L.residual_mse(head['residual'], valid, count)
             if head['residual'] is not None else jnp.zeros(()))
    return bce + weight * recon, (bce, recon, jnp.sum(valid))

  # ---------------------------------------------------------------- inference
  def inference(self, features, detections: Dict[str, jnp.ndarray], space: ClassSpace,
                scoring: str):
    """Mask probabilities of each detection for its detected class.

    Args:
      features: P2..P5.
      detections: the box head's ``boxes`` [B, N, 4] and ``classes`` [B, N].
      space: the target classes as this head sees them.
      scoring: 'direct' or 'projected' (``ClassSpace.mask_vectors``).
    Returns:
      [B, N, 28, 28] probabilities.
    """
    classes = detections['classes']
    vectors = space.mask_vectors(classes.reshape(-1), scoring)
    logits = self.on_boxes(features, detections['boxes'], vectors)['logits'][..., 0]
    s = self.mask_size
    return jax.nn.sigmoid(logits).reshape(classes.shape + (s, s))


def _first_true(mask, n):
  """Indices of the first ``n`` True entries of ``mask`` [R] -> ([n] int32, [n] bool);
  beyond R the entries are False (index R - 1)."""
  padded = jnp.pad(mask, (0, max(0, n - mask.shape[0])))
  order = jnp.argsort(~padded, stable=True)[:n]
  return jnp.minimum(order, mask.shape[0] - 1).astype(jnp.int32), padded[order]
