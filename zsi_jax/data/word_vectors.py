"""Class vectors from word-embedding files (word2vec, GloVe, fastText) via gensim.

Multi-word names ("hot dog") use the phrase token if the vocabulary has one
("hot_dog"), else the mean of the words' vectors. Each class vector is
L2-normalised and scaled to a common norm (0.7666, that of the authors' files);
the background vector starts as the mean of the class vectors.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from zsi_jax import storage

DEFAULT_NORM = 0.7666


def load_keyed_vectors(path: str, binary: Optional[bool] = None, no_header: bool = False):
  """gensim KeyedVectors from a word2vec (binary/text), GloVe (no header) or fastText .vec file
  (a local path, or a URL copied to this host's cache first)."""
  if not storage.exists(path):
    raise FileNotFoundError(f'word-vector file not found: {path}')
  from gensim.models import KeyedVectors
  if binary is None:
    binary = path.endswith('.bin') or path.endswith('.bin.gz')
  try:
    return KeyedVectors.load_word2vec_format(storage.local_copy(path), binary=binary,
                                             no_header=no_header)
  except (ValueError, UnicodeDecodeError, EOFError) as e:
    raise ValueError(f'{path}: cannot read as word2vec {"binary" if binary else "text"} '
                     f'format{" without header" if no_header else ""}: {e}') from e


def _lookup(kv, name: str):
  """The vector of a class name, or None if any of its words is unknown."""
  for cand in (name, name.replace(' ', '_'), name.replace(' ', '-')):
    if cand in kv.key_to_index:
      return np.asarray(kv[cand], np.float64)
  words = name.replace('_', ' ').split()
  if words and all(w in kv.key_to_index for w in words):
    return np.mean([kv[w] for w in words], axis=0)
  lower = [w.lower() for w in words]
  if words and all(w in kv.key_to_index for w in lower):
    return np.mean([kv[w] for w in lower], axis=0)
  return None


def class_vectors(kv, names: Sequence[str], norm: float = DEFAULT_NORM) -> Tuple[np.ndarray, np.ndarray]:
  """[K, D] class vectors scaled to ``norm`` and the background [D] (their mean).

  Raises one ValueError listing every class name without a vector.
  """
  vecs, missing = [], []
  for n in names:
    v = _lookup(kv, n)
    if v is None or not np.all(np.isfinite(v)) or np.linalg.norm(v) == 0:
      missing.append(n)
    else:
      vecs.append(v / np.linalg.norm(v) * norm)
  if missing:
    raise ValueError(f'{len(missing)} class name(s) have no word vector: {missing}')
  vecs = np.stack(vecs).astype(np.float32)
  return vecs, vecs.mean(0)


def vocabulary_matrix(kv, words: Sequence[str], norm: float = DEFAULT_NORM):
  """[V, D] vectors of the vocabulary words found; also the list of missing words.

  Missing words are left out (the vocabulary is a fixed projection basis, so a
  smaller V is valid) and returned so the caller reports them.
  """
  rows, kept, missing = [], [], []
  for w in words:
    v = _lookup(kv, w)
    if v is None or np.linalg.norm(v) == 0:
      missing.append(w)
    else:
      rows.append(v / np.linalg.norm(v) * norm)
      kept.append(w)
  return np.stack(rows).astype(np.float32), kept, missing
