"""Segmenting any list of classes with a trained checkpoint (notebooks, scripts).

    from zsi_jax.inference import Predictor
    p = Predictor.from_checkpoint('runs/shapes')
    out = p.predict('image.png', class_names=['red star', 'blue ring'])
    out['boxes'], out['scores'], out['class_names'], out['masks']   # original pixels

The workdir keeps the class space it was trained with (``classes.json``), so
the dataset is not needed. Class names become vectors the way the training
classes did: the trained class vectors for its classes, otherwise a
gensim-loadable word-vector file (the dataset's, e.g. ZSI-Shapes'
``word_vectors.txt``, copied into the workdir when small, or one the user
names). The class matrix is padded to ``max_classes`` rows, so any list of up to
that many classes reuses the compiled function.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from zsi_jax import trained
from zsi_jax.data import datasets
from zsi_jax.modeling.zsi import ZSIModel
from zsi_jax.segmenter import ImageLike, Segmenter, load_image  # noqa: F401 (re-exported)


class Predictor(Segmenter):
  """A trained model with its class space, ready to segment images (``Segmenter.predict``)."""

  more_classes_hint = 'pass max_classes= (predict.py --max_classes)'

  def __init__(self, config, variables, info: datasets.DatasetInfo, step: int = 0,
               word_vectors: Optional[str] = None, max_classes: Optional[int] = None):
    """Args:
      config: the experiment config saved with the checkpoint.
      variables: model variables ({'params': ..., other collections}).
      info: the class space the model was trained with (names, vectors, background).
      step: checkpoint step (for reports).
      word_vectors: gensim-loadable file for class names outside the class space
        (default: the dataset's own, if it ships one).
      max_classes: rows of the padded class matrix (default: the config's
        ``data.max_classes`` or the class space's size, whichever is larger).
    """
    d, test = config.data, config.model.test
    super().__init__(info, max_classes=max_classes or info.class_rows(d.max_classes),
                     image_size=d.image_size, scale=d.scale, mask_threshold=test.mask_threshold,
                     seen_calibration=test.seen_calibration, scoring=test.scoring, step=step,
                     word_vectors=word_vectors)
    self.config = config
    self.variables = variables
    self.model = trained.inference_model(config, info)
    self._seen = trained.seen_inputs(config, info)
    self._detectors = {}

  @classmethod
  def from_checkpoint(cls, workdir: str, step: Optional[int] = None,
                      data_root: Optional[str] = None, vectors: Optional[str] = None,
                      **kwargs) -> 'Predictor':
    """Restores config, parameters and class space from ``workdir``.

    Args:
      workdir: a training workdir.
      step: checkpoint step (default: the latest).
      data_root: read the class space from this dataset instead of the workdir
        (workdirs written before zsi_jax kept it need the dataset; default: the
        config's root).
      vectors: class-vector file inside the dataset (default: the config's).
      **kwargs: ``word_vectors``, ``max_classes`` (see ``__init__``).
    """
    t = trained.load(workdir, step, data_root=data_root, vectors=vectors)
    return cls(t.config, t.variables, t.info, t.step, **kwargs)

  def _detector(self, scoring: str):
    if scoring not in self._detectors:
      model = self.model
      sv, sm = self._seen

      def run(variables, image, hw, cv, cm, gamma):
        return model.apply(variables, image, hw, cv, cm, seen_vectors=sv, seen_valid=sm,
                           scoring=scoring, seen_calibration=gamma, method=ZSIModel.detect)
      self._detectors[scoring] = jax.jit(run)
    return self._detectors[scoring]

  def _detect(self, canvas, hw, class_vectors, class_valid, gamma, scoring):
    det = self._detector(scoring)(self.variables, jnp.asarray(canvas), jnp.asarray(hw),
                                  jnp.asarray(class_vectors), jnp.asarray(class_valid), gamma)
    return {k: v[0] for k, v in jax.device_get(det).items()}

  def compilations(self) -> int:
    """Number of compiled detector variants so far (one per scoring mode and input shape)."""
    return sum(f._cache_size() for f in self._detectors.values())
