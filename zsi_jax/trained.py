"""A trained model from its workdir, the one way evaluation, prediction, the
notebook and export load one: config, variables, class space and the model.

The class space comes from ``WORKDIR/classes.json`` (written when training
starts), so a workdir segments images with its dataset gone; workdirs from
before that file, or a caller that names ``data_root``/``vectors``, read the
dataset instead. Evaluation always reads the dataset (it needs the ground
truth).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

import ml_collections

from zsi_jax import checkpoint as ckpt_lib
from zsi_jax.data import datasets
from zsi_jax.modeling.build import build_model
from zsi_jax.modeling.zsi import ZSIModel


@dataclasses.dataclass
class TrainedModel:
  config: ml_collections.ConfigDict
  variables: Dict[str, Any]
  info: datasets.DatasetInfo     # the class space (and the dataset, when read from it)
  step: int


def load_dataset_of(workdir: str, config, data_root: Optional[str] = None,
                    vectors: Optional[str] = None) -> datasets.DatasetInfo:
  """The dataset a workdir was trained on (or ``data_root`` / ``vectors``), with
  an error that says how to point at it."""
  try:
    return datasets.load_dataset(data_root or config.data.root, vectors or config.data.vectors)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'{e}; the dataset {workdir} was trained on is needed here: '
                            'pass its root (eval.py and predict.py: --data_root)') from None


def load(workdir: str, step: Optional[int] = None, data_root: Optional[str] = None,
         vectors: Optional[str] = None, dataset: bool = False) -> TrainedModel:
  """Restores a workdir's config, checkpoint ``step`` (default: the latest) and class space.

  ``dataset``: read the dataset even when the workdir keeps its class space
  (evaluation); also read when ``data_root`` or ``vectors`` is given.
  """
  config = ckpt_lib.load_config(workdir)
  info = None
  if not (dataset or data_root or vectors):
    info = datasets.read_class_space(workdir)
  if info is None:
    info = load_dataset_of(workdir, config, data_root, vectors)
  variables, step = ckpt_lib.restore_variables(workdir, step)
  return TrainedModel(config, variables, info, step)


def inference_model(config, info: datasets.DatasetInfo, backend: Optional[str] = None,
                    model_overrides: Optional[dict] = None) -> ZSIModel:
  """The inference model of a config and class space (``model_overrides``:
  ``config.model`` keys to replace, e.g. ``{'conv_impl': 'conv'}``)."""
  model = config.model
  if model_overrides:
    model = ml_collections.ConfigDict(model.to_dict())
    model.update(model_overrides)
  return build_model(model, info.background, len(info.seen), training=False, backend=backend)


def seen_inputs(config, info: datasets.DatasetInfo):
  """The training (seen) classes' vectors as the detector takes them: padded to the
  rows every class list of the dataset gets, ([k, D], [k] bool)."""
  return datasets.pad_class_vectors(info.vectors_of(info.seen),
                                    info.class_rows(config.data.max_classes))
