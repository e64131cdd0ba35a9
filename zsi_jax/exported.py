"""A zero-shot segmenter exported to one file by ``export.py``, loaded without the model code.

    from zsi_jax.exported import ExportedModel
    model = ExportedModel.load('model.zsi')
    out = model.predict('photo.jpg', class_names=['red star', 'green moon'])

The file is a zip archive of

- ``metadata.json``: format version, canvas size and resize limits, the
  normalisation, thresholds, scoring, the trained class space, the training
  config, checkpoint step and code version;
- ``detect.jaxexport``: the detect function serialised with ``jax.export``
  (StableHLO), lowered for every platform listed in the metadata; its inputs
  are the parameters, one padded image, the class vectors and the calibration
  gamma, so any list of up to ``max_classes`` classes runs without tracing;
- ``variables.npz``: the parameters, in the function's argument order;
- ``word_vectors/<file>``: a small word-vector file, when the training dataset
  had one (names outside the class space then work as in the workdir).

Loading imports jax, NumPy and Pillow (and gensim for word vectors), never
``zsi_jax.modeling`` or flax.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from zsi_jax import storage
from zsi_jax.data import datasets
from zsi_jax.segmenter import Segmenter

FORMAT = 'zsi_jax.exported_model'
FORMAT_VERSION = 1
METADATA = 'metadata.json'
FUNCTION = 'detect.jaxexport'
VARIABLES = 'variables.npz'
WORD_VECTORS_DIR = 'word_vectors/'


def leaf_name(i: int) -> str:
  return f'leaf_{i:05d}'


def pack_leaves(leaves: List[np.ndarray]) -> bytes:
  """Parameter arrays -> npz bytes (bfloat16 stored as its uint16 bits)."""
  buf = io.BytesIO()
  np.savez(buf, **{leaf_name(i): (x.view(np.uint16) if x.dtype == jnp.bfloat16 else x)
                   for i, x in enumerate(leaves)})
  return buf.getvalue()


def unpack_leaves(data: bytes, dtypes: List[str]) -> List[np.ndarray]:
  with np.load(io.BytesIO(data)) as npz:
    return [npz[leaf_name(i)].view(jnp.bfloat16) if dt == 'bfloat16' else npz[leaf_name(i)]
            for i, dt in enumerate(dtypes)]


class ExportedModel(Segmenter):
  """An exported model: ``predict`` as ``inference.Predictor`` has it (``Segmenter``)."""

  more_classes_hint = 'export the model again with export.py --max_classes K'

  def __init__(self, path: str, metadata: dict, function, leaves: List[np.ndarray],
               word_vectors: Optional[str] = None):
    info = datasets.class_space_from_record(metadata['classes'], f'{path} (class space)')
    super().__init__(info, max_classes=metadata['max_classes'],
                     image_size=metadata['image_size'], scale=metadata['scale'],
                     mask_threshold=metadata['mask_threshold'],
                     seen_calibration=metadata['seen_calibration'],
                     scoring=metadata['scoring'], step=metadata['step'],
                     word_vectors=word_vectors)
    self.path = path
    self.metadata = metadata
    self.function = function
    self._leaves = [jnp.asarray(x) for x in leaves]
    self._call = jax.jit(function.call)

  @classmethod
  def load(cls, path: str, word_vectors: Optional[str] = None) -> 'ExportedModel':
    """Reads a model file (a local path or a bucket URL).

    ``word_vectors``: a gensim-loadable file for class names outside the class
    space (default: the one in the file, if any).
    """
    if not storage.exists(path):
      raise FileNotFoundError(f'model file not found: {path}')
    try:
      archive = zipfile.ZipFile(io.BytesIO(storage.read_bytes(path)))
      names = set(archive.namelist())
    except zipfile.BadZipFile:
      raise ValueError(f'{path}: not a zsi_jax model file, or a truncated one (write it again '
                       'with export.py)') from None
    if METADATA not in names:
      raise ValueError(f'{path}: not a zsi_jax model file ({METADATA} missing)')
    try:
      metadata = json.loads(archive.read(METADATA))
    except (ValueError, zipfile.BadZipFile) as e:
      raise ValueError(f'{path}: unreadable {METADATA} (truncated file?): {e}') from None
    if metadata.get('format') != FORMAT:
      raise ValueError(f'{path}: not a zsi_jax model file (format {metadata.get("format")!r})')
    if metadata.get('format_version') != FORMAT_VERSION:
      raise ValueError(f'{path}: model format version {metadata.get("format_version")!r}, but '
                       f'this zsi_jax reads version {FORMAT_VERSION}: export it again with this '
                       'version\'s export.py')
    missing = sorted({FUNCTION, VARIABLES} - names)
    if missing:
      raise ValueError(f'{path}: {", ".join(missing)} missing (truncated file?)')
    platform = jax.default_backend()
    platform = 'cuda' if platform == 'gpu' else platform
    if platform not in metadata['platforms']:
      raise ValueError(f'{path}: exported for {metadata["platforms"]}, not for {platform}')
    try:
      function = jax.export.deserialize(bytearray(archive.read(FUNCTION)))
      leaves = unpack_leaves(archive.read(VARIABLES), [v['dtype'] for v in
                                                      metadata['variables']])
    except (zipfile.BadZipFile, ValueError, KeyError) as e:
      raise ValueError(f'{path}: damaged model file: {e}') from None
    if word_vectors is None and metadata.get('word_vectors'):
      word_vectors = _extract(archive, metadata['word_vectors'], path)
    return cls(path, metadata, function, leaves, word_vectors)

  def _detect(self, canvas, hw, class_vectors, class_valid, gamma, scoring):
    if scoring != self.scoring:
      raise ValueError(f'{self.path} was exported with scoring={self.scoring!r}; export again '
                       f'with --config.model.test.scoring={scoring} for the other')
    det = self._call(self._leaves, jnp.asarray(canvas, jnp.float32), jnp.asarray(hw, jnp.int32),
                     jnp.asarray(class_vectors, jnp.float32), jnp.asarray(class_valid, bool),
                     jnp.float32(gamma))
    return {k: np.asarray(v[0]) for k, v in jax.device_get(det).items()}


def _extract(archive: zipfile.ZipFile, member: str, path: str) -> str:
  """A member of the archive as a file in this host's cache (gensim reads files)."""
  data = archive.read(member)
  digest = hashlib.sha256(data).hexdigest()[:16]
  out = os.path.join(storage.cache_dir(), 'exported', digest, os.path.basename(member))
  if not os.path.exists(out) or os.path.getsize(out) != len(data):
    storage.write_bytes(out, data)
  return out


def read_metadata(path: str) -> Dict[str, object]:
  """The metadata record of a model file, without loading the function."""
  with zipfile.ZipFile(io.BytesIO(storage.read_bytes(path))) as archive:
    return json.loads(archive.read(METADATA))
