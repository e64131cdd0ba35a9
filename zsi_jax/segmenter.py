"""What every way of segmenting one image shares, around a detect function.

``Segmenter`` does the host side: image in (path, PIL image or array),
class names to vectors (the trained class space, else a gensim-loadable
word-vector file), resize, pad and normalise, and after detection boxes and
masks at the original size. Subclasses supply ``_detect``:
``inference.Predictor`` the model traced from a checkpoint,
``exported.ExportedModel`` a serialised ``jax.export`` function. This module
imports neither the model nor flax.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image

from zsi_jax.data import datasets, images
from zsi_jax.data import word_vectors as wv_lib
from zsi_jax.data.input_pipeline import prepare_image
from zsi_jax.ops.postprocess import paste_masks, to_original_boxes

ImageLike = Union[str, np.ndarray, Image.Image]


def load_image(image: ImageLike) -> np.ndarray:
  """A path, PIL image or array -> [H, W, 3] uint8 RGB (any mode Pillow reads)."""
  if isinstance(image, str):
    return images.decode(image, image)
  if isinstance(image, Image.Image):
    return images.to_rgb8(image, 'the image')
  arr = np.asarray(image)
  if arr.ndim != 3 or arr.shape[2] != 3:
    raise ValueError(f'expected an [H, W, 3] RGB image, got shape {arr.shape}')
  if arr.dtype != np.uint8:
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) or \
       arr.min() < 0 or arr.max() > 255:
      raise ValueError(f'expected uint8 RGB values in 0..255, got dtype {arr.dtype} with '
                       'values outside that range')
  return arr.astype(np.uint8)


class Segmenter:
  """Segments any list of up to ``max_classes`` classes in one image at a time.

  Attributes:
    info: the trained class space (names, seen/unseen, category ids, vectors).
    word_vectors: gensim-loadable file for names outside the class space (or None).
    max_classes: rows of the padded class matrix: the most classes one call takes.
    image_size: the padded canvas (H, W); scale: keep-ratio resize limits.
    mask_threshold: probability at which a mask pixel is on.
    seen_calibration: default gamma (see ``predict``); scoring: default scoring.
    step: the checkpoint step.
  """

  def __init__(self, info: datasets.DatasetInfo, *, max_classes: int,
               image_size: Tuple[int, int], scale: Tuple[int, int], mask_threshold: float,
               seen_calibration: float, scoring: str, step: int,
               word_vectors: Optional[str] = None):
    self.info = info
    self.word_vectors = word_vectors or info.word_vectors
    self.max_classes = int(max_classes)
    self.image_size = tuple(int(x) for x in image_size)
    self.scale = tuple(int(x) for x in scale)
    self.mask_threshold = float(mask_threshold)
    self.seen_calibration = float(seen_calibration)
    self.scoring = scoring
    self.step = int(step)
    self.dim = int(info.vectors.shape[1])
    self._kv = None

  more_classes_hint = 'split the class list'

  def _detect(self, canvas, hw, class_vectors, class_valid, gamma, scoring
              ) -> Dict[str, np.ndarray]:
    """One padded image -> the model's detections of it, NumPy arrays without the
    batch axis (``boxes``, ``scores``, ``classes``, ``masks``, ``valid``)."""
    raise NotImplementedError

  # ------------------------------------------------------------ class vectors
  def known_spelling(self, class_names: Sequence[str]) -> list:
    """Each name as the class space spells it when it differs only in case or
    spacing (``'Red  Star'`` -> ``'red star'``); other names as given."""
    canon = {' '.join(n.lower().split()): n for n in self.info.names}
    return [n if n in self.info.names else canon.get(' '.join(n.lower().split()), n)
            for n in class_names]

  def class_vectors(self, class_names: Sequence[str]) -> np.ndarray:
    """[K, D] vectors for ``class_names``; one error lists every unknown name."""
    names = self.known_spelling(class_names)
    if not names:
      raise ValueError('class_names is empty')
    if len(set(names)) != len(names):
      raise ValueError(f'class_names has duplicates: {names}')
    known = [n for n in names if n in self.info.names]
    other = [n for n in names if n not in self.info.names]
    out = {}
    if known:
      out.update(zip(known, self.info.vectors_of(known)))
    if other:
      if not self.word_vectors:
        raise ValueError(f'{other} are not classes of the trained class space '
                         f'({", ".join(self.info.names)}) and no word-vector file is set; '
                         'pass word_vectors=<gensim-loadable file> or class_vectors=')
      if self._kv is None:
        self._kv = wv_lib.load_keyed_vectors(self.word_vectors)
      if self._kv.vector_size != self.dim:
        raise ValueError(f'{self.word_vectors}: {self._kv.vector_size}-dimensional word '
                         f'vectors, but the model compares {self.dim}-dimensional ones')
      try:
        vecs, _ = wv_lib.class_vectors(self._kv, other, norm=float(np.linalg.norm(
            self.info.vectors, axis=1).mean()))
      except ValueError as e:
        raise ValueError(f'{e} (word-vector file: {self.word_vectors})') from None
      out.update(zip(other, vecs))
    return np.stack([out[n] for n in names]).astype(np.float32)

  # ---------------------------------------------------------------- predict
  def predict(self, image: ImageLike, class_names: Optional[Sequence[str]] = None,
              class_vectors: Optional[np.ndarray] = None, score_threshold: float = 0.3,
              scoring: Optional[str] = None,
              seen_calibration: Optional[float] = None) -> Dict[str, object]:
    """Detects and segments the given classes in one image.

    Args:
      image: path, PIL image or [H, W, 3] uint8 array.
      class_names: the classes to look for (default: all classes of the
        trained class space, seen and unseen).
      class_vectors: [K, D] vectors instead of names (then names are
        ``class_0..``, or ``class_names`` when given too).
      score_threshold: detections below it are dropped (the model's own
        threshold, config.model.test.score_threshold, applies first).
      scoring: 'direct' or 'projected' (default: the model's).
      seen_calibration: gamma in [-1, 1]: when the list holds seen and unseen
        classes, seen-class scores are lowered by gamma (unseen by -gamma when
        negative) before ranking (default: the config's
        ``model.test.seen_calibration``); the scores returned are the
        calibrated ones. Any gamma reuses the compiled detector.
    Returns:
      dict of ``boxes`` [N, 4] xyxy float (original pixels), ``scores`` [N],
      ``labels`` [N] (index into the class list), ``class_names`` (list of N
      names), ``masks`` [N, H, W] bool, ``classes`` (the class list).
    """
    gamma = self.seen_calibration if seen_calibration is None else float(seen_calibration)
    if not -1.0 <= gamma <= 1.0:
      raise ValueError(f'seen_calibration={gamma}: must be in [-1, 1]')
    img = load_image(image)
    if class_vectors is not None:
      vecs = np.asarray(class_vectors, np.float32)
      names = list(class_names) if class_names is not None else [
          f'class_{i}' for i in range(len(vecs))]
      if len(names) != len(vecs):
        raise ValueError(f'{len(names)} class names for {len(vecs)} class vectors')
    else:
      names = list(class_names) if class_names is not None else self.info.names
      vecs = self.class_vectors(names)
    if vecs.ndim != 2 or vecs.shape[1] != self.dim:
      raise ValueError(f'class vectors must be [K, {self.dim}] (the model\'s word-vector '
                       f'dimension), got {vecs.shape}')
    if len(vecs) > self.max_classes:
      raise ValueError(f'{len(vecs)} classes, but this model takes at most {self.max_classes} '
                       f'per call: {self.more_classes_hint}')
    cv, cm = datasets.pad_class_vectors(vecs, self.max_classes)
    canvas, hw, s = prepare_image(img, self.image_size, self.scale)
    det = self._detect(canvas[None], np.asarray(hw, np.int32)[None], cv, cm, np.float32(gamma),
                       scoring or self.scoring)
    keep = det['valid'] & (det['scores'] >= score_threshold)
    boxes = to_original_boxes(det['boxes'][keep], s, img.shape[:2])
    labels = det['classes'][keep].astype(np.int64)
    masks = paste_masks(det['masks'][keep], boxes, img.shape[:2], self.mask_threshold)
    return dict(boxes=boxes.astype(np.float32), scores=det['scores'][keep], labels=labels,
                class_names=[names[i] for i in labels], masks=masks.astype(bool), classes=names)
