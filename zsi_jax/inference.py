"""Segmenting any list of classes with a trained checkpoint (notebooks, scripts).

    from zsi_jax.inference import Predictor
    p = Predictor.from_checkpoint('runs/shapes')
    out = p.predict('image.png', class_names=['red star', 'blue ring'])
    out['boxes'], out['scores'], out['class_names'], out['masks']   # original pixels

Class names become vectors the way the training classes did: the dataset's own
vector file for its classes, otherwise a gensim-loadable word-vector file (the
one the dataset ships, e.g. ZSI-Shapes' ``word_vectors.txt``, or one the user
names). The class matrix is padded to ``max_classes`` rows, so any list of up to
that many classes reuses the compiled function.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from zsi_jax import checkpoint as ckpt_lib
from zsi_jax.data import datasets, images
from zsi_jax.data import word_vectors as wv_lib
from zsi_jax.data.input_pipeline import prepare_image
from zsi_jax.modeling.build import build_model
from zsi_jax.modeling.class_space import pad_class_vectors
from zsi_jax.modeling.zsi import ZSIModel
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


class Predictor:
  """A trained model with its dataset's class vocabulary, ready to segment images."""

  def __init__(self, config, variables, info: datasets.DatasetInfo, step: int = 0,
               word_vectors: Optional[str] = None, max_classes: Optional[int] = None):
    """Args:
      config: the experiment config saved with the checkpoint.
      variables: model variables ({'params': ..., other collections}).
      info: the dataset the model was trained on (class names, vectors, background).
      step: checkpoint step (for reports).
      word_vectors: gensim-loadable file for class names outside the dataset
        (default: the dataset's own, if it ships one).
      max_classes: rows of the padded class matrix (default: the config's
        ``data.max_classes`` or the dataset's class count, whichever is larger).
    """
    self.config = config
    self.variables = variables
    self.info = info
    self.step = step
    self.word_vectors = word_vectors or info.word_vectors
    self._kv = None
    self.dim = int(info.vectors.shape[1])
    self.max_classes = int(max_classes or info.class_rows(config.data.max_classes))
    self.model = build_model(config.model, info.background, len(info.seen), training=False)
    self._seen = pad_class_vectors(info.vectors_of(info.seen), max(self.max_classes,
                                                                    len(info.seen)))
    self._detect = {}

  @classmethod
  def from_checkpoint(cls, workdir: str, step: Optional[int] = None,
                      data_root: Optional[str] = None, vectors: Optional[str] = None,
                      **kwargs) -> 'Predictor':
    """Restores config and parameters from ``workdir`` (config.json + orbax checkpoints).

    Args:
      workdir: a training workdir.
      step: checkpoint step (default: the latest).
      data_root: dataset root if it moved since training (default: the config's).
      vectors: class-vector file name inside the dataset (default: the config's).
      **kwargs: ``word_vectors``, ``max_classes`` (see ``__init__``).
    """
    config = ckpt_lib.load_config(workdir)
    root = data_root or config.data.root
    try:
      info = datasets.load_dataset(root, vectors or config.data.vectors)
    except FileNotFoundError as e:
      raise FileNotFoundError(f'{e}. The predictor needs the dataset the model was trained on '
                              '(class names and vectors): pass data_root= (predict.py and '
                              'eval.py: --data_root)') from None
    variables, step = ckpt_lib.restore_variables(workdir, step)
    return cls(config, variables, info, step, **kwargs)

  # ------------------------------------------------------------ class vectors
  def class_vectors(self, class_names: Sequence[str]) -> np.ndarray:
    """[K, D] vectors for ``class_names``; one error lists every unknown name."""
    names = list(class_names)
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
        raise ValueError(f'{other} are not classes of the training dataset '
                         f'({self.info.root}) and no word-vector file is set; pass '
                         'word_vectors=<gensim-loadable file> or class_vectors=')
      if self._kv is None:
        self._kv = wv_lib.load_keyed_vectors(self.word_vectors)
      try:
        vecs, _ = wv_lib.class_vectors(self._kv, other, norm=float(np.linalg.norm(
            self.info.vectors, axis=1).mean()))
      except ValueError as e:
        raise ValueError(f'{e} (word-vector file: {self.word_vectors})') from None
      out.update(zip(other, vecs))
    return np.stack([out[n] for n in names]).astype(np.float32)

  # ---------------------------------------------------------------- predict
  def _detector(self, scoring: str):
    if scoring not in self._detect:
      model = self.model
      sv, sm = self._seen

      def run(variables, image, hw, cv, cm, gamma):
        return model.apply(variables, image, hw, cv, cm, seen_vectors=sv, seen_valid=sm,
                           scoring=scoring, seen_calibration=gamma, method=ZSIModel.detect)
      self._detect[scoring] = jax.jit(run)
    return self._detect[scoring]

  def predict(self, image: ImageLike, class_names: Optional[Sequence[str]] = None,
              class_vectors: Optional[np.ndarray] = None, score_threshold: float = 0.3,
              scoring: Optional[str] = None,
              seen_calibration: Optional[float] = None) -> Dict[str, object]:
    """Detects and segments the given classes in one image.

    Args:
      image: path, PIL image or [H, W, 3] uint8 array.
      class_names: the classes to look for (default: all classes of the
        training dataset, seen and unseen).
      class_vectors: [K, D] vectors instead of names (then names are
        ``class_0..``, or ``class_names`` when given too).
      score_threshold: detections below it are dropped (the model's own
        threshold, config.model.test.score_threshold, applies first).
      scoring: 'direct' or 'projected' (default: the config's).
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
    gamma = (self.config.model.test.seen_calibration if seen_calibration is None
             else float(seen_calibration))
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
    cv, cm = pad_class_vectors(vecs, self.max_classes)
    d = self.config.data
    canvas, hw, s = prepare_image(img, tuple(d.image_size), tuple(d.scale))
    hw = np.asarray(hw, np.int32)
    det = self._detector(scoring or self.config.model.test.scoring)(
        self.variables, jnp.asarray(canvas[None]), jnp.asarray(hw[None]), jnp.asarray(cv),
        jnp.asarray(cm), np.float32(gamma))
    det = {k: np.asarray(v[0]) for k, v in jax.device_get(det).items()}
    keep = det['valid'] & (det['scores'] >= score_threshold)
    boxes = to_original_boxes(det['boxes'][keep], s, img.shape[:2])
    labels = det['classes'][keep].astype(np.int64)
    masks = paste_masks(det['masks'][keep], boxes, img.shape[:2],
                        self.config.model.test.mask_threshold)
    return dict(boxes=boxes.astype(np.float32), scores=det['scores'][keep], labels=labels,
                class_names=[names[i] for i in labels], masks=masks.astype(bool), classes=names)

  def compilations(self) -> int:
    """Number of compiled detector variants so far (one per scoring mode and input shape)."""
    return sum(f._cache_size() for f in self._detect.values())
