"""Class-vector file (authors' format) from a word2vec/GloVe/fastText file.

python data_prep/make_word_vectors.py --vectors GoogleNews-vectors-negative300.bin \
    --classes 65_15|48_17|names.txt|split.json --out class_vectors.txt \
    [--vocabulary zsi_jax/assets/pl_zsd/vocabulary_list.txt --vocab_out vocab.txt]
Class order: the split's seen then unseen classes (or the lines of names.txt).
--vocab_out is the box head's vocabulary matrix (D rows x V words): put it in
the dataset root and train with --config.data.vocabulary=vocab.txt
--config.model.box_head.vocabulary_size=V (V printed below).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zsi_jax import cli  # noqa: E402
from zsi_jax.data import datasets, splits, word_vectors  # noqa: E402


def class_names(spec):
  if spec.endswith('.txt'):
    with open(spec) as f:
      return [l.strip() for l in f if l.strip()]
  _, seen, unseen = splits.get_split(spec)
  return seen + unseen


def main(argv=None):
  p = cli.ArgumentParser(description=__doc__)
  p.add_argument('--vectors', required=True)
  p.add_argument('--binary', action='store_true', default=None)
  p.add_argument('--no_header', action='store_true', help='GloVe text files')
  p.add_argument('--classes', required=True)
  p.add_argument('--out', required=True)
  p.add_argument('--norm', type=float, default=word_vectors.DEFAULT_NORM)
  p.add_argument('--vocabulary')
  p.add_argument('--vocab_out')
  a = p.parse_args(argv)
  kv = word_vectors.load_keyed_vectors(a.vectors, a.binary, a.no_header)
  names = class_names(a.classes)
  vecs, bg = word_vectors.class_vectors(kv, names, a.norm)
  datasets.write_vector_file(a.out, vecs, bg)
  print(f'{a.out}: {len(names)} classes x {vecs.shape[1]} dims')
  if a.vocabulary:
    with open(a.vocabulary) as f:
      words = [l.strip() for l in f if l.strip()]
    mat, kept, missing = word_vectors.vocabulary_matrix(kv, words, a.norm)
    np.savetxt(a.vocab_out or a.out + '.vocab.txt', mat.T, delimiter=',', fmt='%.9e')
    print(f'vocabulary: {len(kept)} of {len(words)} words have vectors; '
          f'{len(missing)} skipped: {missing[:20]}{" ..." if len(missing) > 20 else ""}')


if __name__ == '__main__':
  cli.main(lambda _: main())(None)
