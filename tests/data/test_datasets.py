"""A prepared dataset root: a hand-edited split.json that cannot be right is refused."""
import json

import numpy as np
import pytest

from zsi_jax.data import datasets


def _root(tmp_path, seen, unseen, ids=None):
  names = seen + unseen
  ids = ids or {n: i + 1 for i, n in enumerate(dict.fromkeys(names))}
  (tmp_path / 'split.json').write_text(json.dumps(dict(seen=seen, unseen=unseen,
                                                       category_ids=ids)))
  vecs = np.random.default_rng(0).normal(size=(4, 1 + len(names)))
  np.savetxt(tmp_path / 'class_vectors.txt', vecs, delimiter=',')
  return str(tmp_path)


def test_a_valid_split_loads(tmp_path):
  info = datasets.load_dataset(_root(tmp_path, ['a', 'b'], ['c']))
  assert info.names == ['a', 'b', 'c'] and info.vectors.shape == (3, 4)
  assert info.class_rows() == 3 and info.class_rows(10) == 10


def test_a_class_both_seen_and_unseen_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"split.json: \['b'\] both seen and unseen"):
    datasets.load_dataset(_root(tmp_path, ['a', 'b'], ['b', 'c']))


def test_a_class_listed_twice_is_refused(tmp_path):
  with pytest.raises(ValueError, match=r"\['a'\] listed more than once"):
    datasets.load_dataset(_root(tmp_path, ['a', 'a'], ['c']))


def test_invalid_json_names_the_file(tmp_path):
  (tmp_path / 'split.json').write_text('{"seen": [')
  with pytest.raises(ValueError, match='split.json is not valid JSON'):
    datasets.load_dataset(str(tmp_path))
