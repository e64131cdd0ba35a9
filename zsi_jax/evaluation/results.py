"""Model detections -> COCO-format results in original image coordinates (host side)."""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from zsi_jax.ops.postprocess import paste_masks, to_original_boxes


def image_results(image_id: int, det: Dict[str, np.ndarray], scale: float, orig_hw,
                  cat_ids: Sequence[int], with_masks: bool = True,
                  mask_threshold: float = 0.5) -> List[dict]:
  """COCO results of one image.

  Args:
    image_id: COCO image id.
    det: one image's detections: boxes [N, 4] (input pixels), scores [N],
      classes [N] (index into ``cat_ids``), valid [N], masks [N, m, m] probs.
    scale, orig_hw: from the batch's image info.
    cat_ids: the dataset's category id of each class index.
  Returns:
    list of dicts with image_id, category_id, bbox [x, y, w, h], score and, with
    masks, an RLE ``segmentation``.
  """
  valid = np.asarray(det['valid'], bool)
  if not valid.any():
    return []
  boxes = to_original_boxes(np.asarray(det['boxes'])[valid], scale, orig_hw)
  scores = np.asarray(det['scores'])[valid]
  classes = np.asarray(det['classes'])[valid]
  out = []
  rles = None
  if with_masks:
    full = paste_masks(np.asarray(det['masks'])[valid], boxes, orig_hw, mask_threshold)
    rles = mask_utils.encode(np.asfortranarray(full.transpose(1, 2, 0).astype(np.uint8)))
  for i in range(boxes.shape[0]):
    x1, y1, x2, y2 = boxes[i]
    r = {'image_id': int(image_id), 'category_id': int(cat_ids[int(classes[i])]),
         'bbox': [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
         'score': float(scores[i])}
    if rles is not None:
      rle = dict(rles[i])
      rle['counts'] = rle['counts'].decode('ascii')
      r['segmentation'] = rle
    out.append(r)
  return out
