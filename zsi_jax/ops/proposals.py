"""RPN proposals: per-level top-k, decode, clip, per-level NMS, merge."""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from zsi_jax.ops import boxes as box_ops
from zsi_jax.ops.nms import nms_padded

# The RPN's deltas are not normalised (torchvision BoxCoder weights (1,1,1,1)).
RPN_STDS = (1.0, 1.0, 1.0, 1.0)


def generate_proposals(objectness, deltas, anchors, image_hw, pre_nms_topk: int,
                       nms_threshold: float, post_nms_topk: int, min_size: float = 0.0,
                       anchor_valid: Optional[Sequence[jnp.ndarray]] = None,
                       stds: Sequence[float] = RPN_STDS):
  """Proposals of one image, fixed size.

  Per level: top ``pre_nms_topk`` by objectness, decode, clip to ``image_hw``,
  mask boxes smaller than ``min_size`` (never reshape), NMS at
  ``nms_threshold``. Then all levels' survivors are merged and the best
  ``post_nms_topk`` by score are kept (torchvision's RPN filter_proposals).

  Args:
    objectness: list of [N_l] float logits (fg minus bg).
    deltas: list of [N_l, 4] float.
    anchors: list of [N_l, 4] float.
    image_hw: (height, width) of the valid image region.
    pre_nms_topk, post_nms_topk: static ints.
    nms_threshold: IoU threshold.
    min_size: boxes with width or height below this are dropped (masked).
    anchor_valid: optional list of [N_l] bool.
    stds: delta normalisers (default (1, 1, 1, 1)).
  Returns:
    boxes [post, 4] float32, scores [post] float32 (logits; -inf when empty),
    valid [post] bool.
  """
  all_boxes, all_scores, all_valid = [], [], []
  for lvl, (obj, dl, anc) in enumerate(zip(objectness, deltas, anchors)):
    n = obj.shape[0]
    k = min(pre_nms_topk, n)
    ok = (jnp.ones((n,), bool) if anchor_valid is None
          else jnp.asarray(anchor_valid[lvl]).astype(bool))
    s = jnp.where(ok, obj, -jnp.inf)
    top_s, top_i = jax.lax.top_k(s, k)
    b = box_ops.decode(jnp.asarray(anc)[top_i], jnp.asarray(dl)[top_i], stds)
    b = box_ops.clip_boxes(b, image_hw)
    w = b[:, 2] - b[:, 0]
    h = b[:, 3] - b[:, 1]
    v = ok[top_i] & (w >= min_size) & (h >= min_size) & jnp.isfinite(top_s)
    # Keep at most k per level after NMS (NMS only removes boxes).
    keep, _ = nms_padded(b, top_s, nms_threshold, k, valid=v)
    kv = keep >= 0
    ki = jnp.maximum(keep, 0)
    all_boxes.append(b[ki])
    all_scores.append(jnp.where(kv, top_s[ki], -jnp.inf))
    all_valid.append(kv)
  boxes = jnp.concatenate(all_boxes)
  scores = jnp.concatenate(all_scores)
  valid = jnp.concatenate(all_valid)
  k = min(post_nms_topk, scores.shape[0])
  top_s, top_i = jax.lax.top_k(jnp.where(valid, scores, -jnp.inf), k)
  out_b, out_v = boxes[top_i], valid[top_i]
  if k < post_nms_topk:
    pad = post_nms_topk - k
    out_b = jnp.concatenate([out_b, jnp.zeros((pad, 4), out_b.dtype)])
    top_s = jnp.concatenate([top_s, jnp.full((pad,), -jnp.inf, top_s.dtype)])
    out_v = jnp.concatenate([out_v, jnp.zeros((pad,), bool)])
  out_b = jnp.where(out_v[:, None], out_b, 0.0)
  return out_b, jnp.where(out_v, top_s, -jnp.inf), out_v
