"""The box head's optional vocabulary projection, end to end: make_word_vectors.py
writes the matrix, training reads it (data.vocabulary), the checkpoint keeps
it, and evaluation, prediction and export use it without the file."""
import os
import shutil

import numpy as np

from tests.scripts import run_script


def _vocabulary(data, tmp_path):
  """A copy of the tiny dataset with a vocabulary of all its words; returns (root, V)."""
  root = str(tmp_path / 'data')
  shutil.copytree(data, root)
  words = [l.split()[0] for l in open(os.path.join(root, 'word_vectors.txt')).read()
           .splitlines()[1:]]
  (tmp_path / 'words.txt').write_text('\n'.join(words + ['notaword']) + '\n')
  (tmp_path / 'names.txt').write_text('red star\n')
  r = run_script(['data_prep/make_word_vectors.py', '--vectors',
                  os.path.join(root, 'word_vectors.txt'), '--classes', str(tmp_path / 'names.txt'),
                  '--out', str(tmp_path / 'unused.txt'), '--vocabulary',
                  str(tmp_path / 'words.txt'), '--vocab_out',
                  os.path.join(root, 'vocabulary.txt')])
  assert f'vocabulary: {len(words)} of {len(words) + 1} words have vectors' in r.stdout
  return root, len(words)


def test_training_with_a_vocabulary_keeps_it_in_the_checkpoint(trained, tmp_path):
  data, _ = trained
  root, v = _vocabulary(data, tmp_path)
  workdir = str(tmp_path / 'run')
  train = ['train.py', '--config', 'tests/tiny_config.py', '--workdir', workdir,
           f'--config.data.root={root}', '--config.total_steps=2', '--config.checkpoint_every=2',
           '--config.data.vocabulary=vocabulary.txt']
  r = run_script(train, check=False)   # the size is missing
  assert r.returncode == 1 and 'set both or neither' in r.stderr
  r = run_script(train + [f'--config.model.box_head.vocabulary_size={v + 1}'], check=False)
  assert r.returncode == 1 and f'{v} words' in r.stderr and f'vocabulary_size is {v + 1}' in r.stderr
  run_script(train + [f'--config.model.box_head.vocabulary_size={v}'])

  from zsi_jax.exported import ExportedModel
  from zsi_jax.inference import Predictor
  expected = np.loadtxt(os.path.join(root, 'vocabulary.txt'), delimiter=',').T
  shutil.rmtree(root)                  # from here on only the workdir has it
  p = Predictor.from_checkpoint(workdir)
  np.testing.assert_allclose(np.asarray(p.variables['constants']['vocabulary']), expected,
                             rtol=1e-6)
  image = np.zeros((64, 64, 3), np.uint8)
  a = p.predict(image, class_names=['red star', 'green ring'], score_threshold=0.0)
  model = str(tmp_path / 'v.zsi')
  run_script(['export.py', '--workdir', workdir, '--out', model])
  b = ExportedModel.load(model).predict(image, class_names=['red star', 'green ring'],
                                        score_threshold=0.0)
  np.testing.assert_allclose(a['scores'], b['scores'], rtol=1e-4, atol=1e-5)
