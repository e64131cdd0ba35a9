"""Word vectors via gensim: gensim's own real 300-d test file and a Word2Vec model trained here."""
import os

import gensim
import numpy as np
import pytest
from gensim.models import Word2Vec

from zsi_jax.data import datasets, word_vectors
from data_prep import make_word_vectors

GENSIM_FILE = os.path.join(os.path.dirname(gensim.__file__), 'test', 'test_data',
                           'EN.1-10.cbow1_wind5_hs0_neg10_size300_smpl1e-05.txt')


def test_real_300d_file_and_missing_names_listed():
  kv = word_vectors.load_keyed_vectors(GENSIM_FILE)
  words = list(kv.key_to_index)[:4]
  names = [words[0], f'{words[1]} {words[2]}', words[3]]
  vecs, bg = word_vectors.class_vectors(kv, names)
  assert vecs.shape == (3, 300)
  np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 0.7666, rtol=1e-5)
  mean = (kv[words[1]] + kv[words[2]]) / 2
  np.testing.assert_allclose(vecs[1], mean / np.linalg.norm(mean) * 0.7666, rtol=1e-5)
  np.testing.assert_allclose(bg, vecs.mean(0), rtol=1e-5)
  with pytest.raises(ValueError) as e:
    word_vectors.class_vectors(kv, [words[0], 'zzqx', 'qqzz yyxx'])
  assert 'zzqx' in str(e.value) and 'qqzz yyxx' in str(e.value) and '2 class' in str(e.value)


def test_trained_binary_model_round_trip_and_cli(tmp_path):
  sentences = [['hot', 'dog', 'cat', 'mouse'], ['cat', 'dog', 'bear'], ['hot_dog', 'mouse']] * 20
  model = Word2Vec(sentences, vector_size=12, min_count=1, seed=0, workers=1)
  path = tmp_path / 'w.bin'
  model.wv.save_word2vec_format(str(path), binary=True)
  kv = word_vectors.load_keyed_vectors(str(path))
  vecs, _ = word_vectors.class_vectors(kv, ['cat', 'hot dog'])
  # The phrase token wins over averaging the words.
  np.testing.assert_allclose(vecs[1], kv['hot_dog'] / np.linalg.norm(kv['hot_dog']) * 0.7666,
                             rtol=1e-5)
  (tmp_path / 'names.txt').write_text('cat\nbear\nhot dog\n')
  (tmp_path / 'vocab.txt').write_text('cat\nmouse\nunknownword\n')
  out = tmp_path / 'cv.txt'
  make_word_vectors.main(['--vectors', str(path), '--classes', str(tmp_path / 'names.txt'),
                          '--out', str(out), '--vocabulary', str(tmp_path / 'vocab.txt'),
                          '--vocab-out', str(tmp_path / 'voc.txt')])
  v, bg = datasets.read_vector_file(str(out), 3)
  assert v.shape == (3, 12)
  assert np.loadtxt(tmp_path / 'voc.txt', delimiter=',').shape == (12, 2)
  with pytest.raises(FileNotFoundError, match='nope.bin'):
    word_vectors.load_keyed_vectors(str(tmp_path / 'nope.bin'))
