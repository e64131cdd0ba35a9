"""A trained workdir -> one self-contained model file (the format: ``zsi_jax.exported``).

The detect function is lowered once for several platforms (``jax.export``).
One lowering serves them all, so the convolutions are XLA's own on every
platform (``model.conv_impl='conv'``): the CPU's Winograd and channel-matmul
forms are chosen per backend at trace time and cannot be. Parameters are
inputs of the function, not constants, and are stored beside it; with
``dtype='bfloat16'`` they are stored in bfloat16 and the model computes in
bfloat16 (half the file).
"""
from __future__ import annotations

import datetime
import io
import json
import zipfile
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

import zsi_jax
from zsi_jax import storage, trained
from zsi_jax.data import datasets
from zsi_jax.data.input_pipeline import MEAN, STD
from zsi_jax.exported import (FORMAT, FORMAT_VERSION, FUNCTION, METADATA, VARIABLES,
                              WORD_VECTORS_DIR, pack_leaves)
from zsi_jax.modeling.zsi import ZSIModel

PLATFORMS = ('cpu', 'cuda', 'tpu')
DTYPES = ('float32', 'bfloat16')


def export(model: trained.TrainedModel, out: str, image_size: Optional[Tuple[int, int]] = None,
           max_classes: Optional[int] = None, dtype: str = 'float32',
           platforms: Sequence[str] = PLATFORMS) -> dict:
  """Writes ``model`` to the file ``out`` (a path or bucket URL); returns its metadata.

  Args:
    model: a loaded workdir (``trained.load``).
    image_size: the canvas (H, W) every image is resized into (default: the
      training's); images are resized to fit it, keeping their ratio.
    max_classes: the most classes one call takes (default: the config's
      ``data.max_classes`` or the class space's size).
    dtype: 'float32' or 'bfloat16' (parameters and computation).
    platforms: the platforms the function is lowered for.
  """
  if dtype not in DTYPES:
    raise ValueError(f'dtype must be one of {DTYPES}, got {dtype!r}')
  config, info = model.config, model.info
  data, test = config.data, config.model.test
  if image_size is None:
    image_size, scale = tuple(data.image_size), tuple(data.scale)
  else:
    image_size = tuple(int(x) for x in image_size)
    if len(image_size) != 2 or min(image_size) < 32:
      raise ValueError(f'image_size must be H,W of at least 32 pixels, got {image_size}')
    scale = (min(image_size), max(image_size))
  k_max = int(max_classes or info.class_rows(data.max_classes))
  if k_max < 1:
    raise ValueError(f'max_classes must be at least 1, got {k_max}')
  net = trained.inference_model(config, info, model_overrides=dict(conv_impl='conv', dtype=dtype))
  seen_vectors, seen_valid = trained.seen_inputs(config, info)
  leaves, treedef = jax.tree_util.tree_flatten(model.variables)
  store = jnp.bfloat16 if dtype == 'bfloat16' else None
  leaves = [np.asarray(jax.device_get(x)) for x in leaves]
  leaves = [x.astype(store) if store is not None and np.issubdtype(x.dtype, np.floating) else x
            for x in leaves]
  stored_dtypes = [x.dtype for x in leaves]

  def detect(params, images, input_hw, class_vectors, class_valid, seen_calibration):
    variables = jax.tree_util.tree_unflatten(
        treedef, [p.astype(jnp.float32) if p.dtype == jnp.bfloat16 else p for p in params])
    return net.apply(variables, images, input_hw, class_vectors, class_valid,
                     seen_vectors=jnp.asarray(seen_vectors), seen_valid=jnp.asarray(seen_valid),
                     scoring=test.scoring, seen_calibration=seen_calibration,
                     method=ZSIModel.detect)

  dim = int(info.vectors.shape[1])
  args = ([jax.ShapeDtypeStruct(x.shape, dt) for x, dt in zip(leaves, stored_dtypes)],
          jax.ShapeDtypeStruct((1,) + image_size + (3,), jnp.float32),
          jax.ShapeDtypeStruct((1, 2), jnp.int32),
          jax.ShapeDtypeStruct((k_max, dim), jnp.float32),
          jax.ShapeDtypeStruct((k_max,), jnp.bool_),
          jax.ShapeDtypeStruct((), jnp.float32))
  exported = jax.export.export(jax.jit(detect), platforms=tuple(platforms))(*args)

  word_vectors = None
  if info.word_vectors and storage.exists(info.word_vectors) and \
     storage.size(info.word_vectors) <= datasets.WORD_VECTORS_COPY_BYTES:
    word_vectors = WORD_VECTORS_DIR + storage.basename(info.word_vectors)
  paths = [jax.tree_util.keystr(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(model.variables)[0]]
  metadata = dict(
      format=FORMAT, format_version=FORMAT_VERSION, platforms=list(platforms),
      convolutions="XLA's convolution on every platform (model.conv_impl='conv')",
      dtype=dtype, image_size=list(image_size), scale=list(scale),
      normalisation=dict(mean=MEAN.tolist(), std=STD.tolist(), channels='RGB'),
      max_classes=k_max, vector_dim=dim, score_threshold=float(test.score_threshold),
      mask_threshold=float(test.mask_threshold), seen_calibration=float(test.seen_calibration),
      scoring=test.scoring, step=int(model.step),
      classes=datasets.class_space_record(info), word_vectors=word_vectors,
      config=json.loads(config.to_json()),
      variables=[dict(path=p, shape=list(x.shape), dtype=str(x.dtype))
                 for p, x in zip(paths, leaves)],
      code_version=zsi_jax.__version__, jax_version=jax.__version__,
      created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'))

  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w', compression=zipfile.ZIP_STORED) as archive:
    archive.writestr(METADATA, json.dumps(metadata, indent=1))
    archive.writestr(FUNCTION, bytes(exported.serialize()))
    archive.writestr(VARIABLES, pack_leaves(leaves))
    if word_vectors:
      archive.writestr(word_vectors, storage.read_bytes(info.word_vectors))
  storage.write_bytes(out, buf.getvalue())
  return metadata
