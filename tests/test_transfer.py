"""Zero-shot transfer at tiny scale: trained on the seen classes of a small
ZSI-Shapes set, the model finds unseen classes clearly better with attribute
word vectors than with one-hot vectors on the same data (paper Table 6: the
transfer comes from the semantics, not from the detector)."""
import jax
import pytest

from tests import tiny_config as tiny
from zsi_jax.data import datasets, shapes
from zsi_jax.evaluation import runner
from zsi_jax.training import loop

STEPS = 400


def _config(root, vectors):
  c = tiny.get_config()
  c.data.root = root
  c.data.vectors = vectors
  c.data.batch_size = 8
  c.model.mask_head.channels = 32
  c.model.box_head.fc_dim = 64
  c.model.rpn.pre_nms_topk_test = c.model.rpn.post_nms_topk_test = 100
  c.model.test.max_detections = 100
  c.optim.update(learning_rate=0.01, warmup_steps=50, recon_warmup_steps=100,
                 decay_epochs=(0.75,))
  c.checkpoint_every = 10_000
  c.log_every = 100
  return c


def _train_and_score(root, vectors, workdir):
  c = _config(root, vectors)
  info = datasets.load_dataset(root, vectors)
  loader, classes = loop.training_data(c, info)
  c.num_epochs = 1
  state = loop.train(c, workdir, classes, loader.train_iterator, STEPS / c.num_epochs,
                     total_steps=STEPS)
  variables = {'params': state.params, **state.model_state}
  m = runner.evaluate_variables(c, jax.device_get(variables), info, 'zsi', STEPS,
                                log=lambda *_: None, progress=False)
  return m['mask']


@pytest.mark.slow
def test_unseen_recall_comes_from_the_word_vectors(tmp_path):
  root = str(tmp_path / 'data')
  shapes.generate(root, shapes.ShapesConfig(image_size=64, num_train=400, num_val=0, num_test=60,
                                            max_instances=3, min_radius=9, max_radius=15,
                                            vector_dim=16), log=lambda *_: None)
  semantic = _train_and_score(root, 'class_vectors.txt', str(tmp_path / 'semantic'))
  onehot = _train_and_score(root, 'class_vectors_onehot.txt', str(tmp_path / 'onehot'))
  print('semantic', semantic, '\nonehot', onehot)
  r_sem, r_one = semantic['recall@100_iou0.5'], onehot['recall@100_iou0.5']
  # Recall@100 credits the one-hot model whenever the right class is among the
  # near-uniform scores it gives every unseen class of a box (docs/RESULTS.md,
  # Table 6), so its recall is far from zero at this scale: seen so far 25.7
  # vs 7.0 and 23.0 vs 11.7 (two code versions, same seeds). The assertions
  # ask for the effect: about twice the recall, and mAP, which ranks the right
  # class, well above.
  assert r_sem > 1.5 * r_one and r_sem > r_one + 0.08, (r_sem, r_one)
  assert semantic['map@0.5'] > 2 * onehot['map@0.5'], (semantic['map@0.5'], onehot['map@0.5'])
