"""The training loop: config -> mesh -> data -> model -> jit step -> loop (big_vision style).

Reads top to bottom; ``train.py`` is a thin absl wrapper around :func:`train`.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from zsi_jax.modeling import convert
from zsi_jax.modeling import resnet as resnet_lib
from zsi_jax.modeling.zsi import ZSIModel, init_variables
from zsi_jax.training import checkpoint as ckpt_lib
from zsi_jax.training import config_check
from zsi_jax.training import mesh as mesh_lib
from zsi_jax.training.metrics import MetricWriter
from zsi_jax.training.optimizer import make_optimizer
from zsi_jax.training.train_step import TrainState, create_state, make_train_step


# Set only by tests (tests/training/test_distributed.py): SIGKILL the process
# right after the checkpoint of this step is complete.
_SIGKILL_AT_STEP = int(os.environ.get('ZSI_TEST_SIGKILL_AT_STEP', '0') or 0)


class NonFiniteLossError(RuntimeError):
  """Raised when a step produces a NaN/inf loss or gradient."""


def trainable_mask(params, model_config) -> Any:
  """Pytree of bools: False for parameters of frozen backbone stages."""
  frozen = int(model_config.backbone.get('frozen_stages', 0))
  if not frozen:
    return jax.tree_util.tree_map(lambda _: True, params)
  backbone = resnet_lib.trainable_mask(params['backbone'], frozen)
  mask = jax.tree_util.tree_map(lambda _: True, params)
  mask = dict(mask)
  mask['backbone'] = backbone
  return mask


def build_model(config: ml_collections.ConfigDict, background, num_train_classes: int):
  """The model for an experiment config and the dataset's background vector."""
  reg = num_train_classes if config.model.box_head.regression == 'class_specific' else 0
  return ZSIModel(config=config.model, background_init=tuple(np.asarray(background).tolist()),
                  num_train_classes=reg)


def pad_class_vectors(vectors: np.ndarray, k_max: int):
  """[K, D] -> ([k_max, D], [k_max] bool); K > k_max is an error naming both."""
  k, d = vectors.shape
  if k > k_max:
    raise ValueError(f'{k} classes but config.data.max_classes={k_max}; raise max_classes')
  out = np.zeros((k_max, d), np.float32)
  out[:k] = vectors
  return out, np.arange(k_max) < k


def training_data(config: ml_collections.ConfigDict, info) -> Tuple[Any, Dict[str, Any]]:
  """The seen-class training loader and the ``data`` dict of :func:`train` for a dataset.

  Args:
    config: experiment config (``data.*``, ``seed``).
    info: ``datasets.DatasetInfo`` of the dataset.
  Returns:
    (Loader, data): pass ``loader.train_iterator`` and ``loader.steps_per_epoch``
    with ``data`` to :func:`train`.
  """
  from zsi_jax.data.input_pipeline import Loader, load_coco
  records, counts = load_coco(info.annotation_file('train'), info.image_dir('train'),
                              info.cat_ids(info.seen))
  logging.info('train: %d images; skipped annotations: %s', len(records), counts)
  d = config.data
  loader = Loader(records, d.batch_size, d.image_size, d.scale, d.max_instances, d.mask_gt_size,
                  train=True, seed=config.seed, num_threads=max(d.get('num_workers', 0), 2))
  data = dict(class_vectors=info.vectors_of(info.seen), background=info.background,
              image_size=tuple(d.image_size))
  return loader, data


def train(config: ml_collections.ConfigDict, workdir: str,
          data: Dict[str, Any],
          make_iterator: Callable[[int], Iterator[Dict[str, np.ndarray]]],
          steps_per_epoch: int,
          total_steps: Optional[int] = None,
          eval_fn: Optional[Callable[[TrainState, int], Dict[str, float]]] = None) -> TrainState:
  """Trains (or resumes) and returns the final state.

  Args:
    config: experiment config.
    workdir: checkpoints, config.json, metrics.jsonl and tensorboard/ go here.
    data: dict with ``class_vectors`` [K, D] (training classes), ``background``
      [D] and ``image_size`` (H, W).
    make_iterator: ``start_step -> iterator`` of this process's local batches
      (dicts of NumPy arrays), positioned at ``start_step``.
    steps_per_epoch: optimizer steps per epoch.
    total_steps: defaults to ``num_epochs * steps_per_epoch``.
    eval_fn: optional periodic evaluation ``(state, step) -> scalars``.
  """
  config_check.validate(config)
  total_steps = int(total_steps or config.num_epochs * steps_per_epoch)
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.data.batch_size, mesh)
  class_vectors, class_valid = pad_class_vectors(np.asarray(data['class_vectors'], np.float32),
                                                 config.data.get('max_classes', 0)
                                                 or len(data['class_vectors']))
  model = build_model(config, data['background'], len(data['class_vectors']))

  rng = jax.random.PRNGKey(config.seed)
  init_rng, state_rng = jax.random.split(rng)
  variables = init_variables(model, init_rng, tuple(data['image_size']),
                             vocabulary=data.get('vocabulary'))
  if config.get('init', {}).get('backbone'):
    # ImageNet weights for a fresh run; a resumed run overwrites them below.
    variables = convert.load_backbone_into(variables, config.init.backbone,
                                           config.model.backbone.depth)
    logging.info('backbone initialised from %s', config.init.backbone)
  # With an explicit total_steps the epoch-based schedule (warm-up aside) is
  # stretched to it, so decays still fall at the same fractions of training.
  sched_epoch = total_steps / config.num_epochs if config.get('total_steps') else steps_per_epoch
  tx, schedule = make_optimizer(config, sched_epoch,
                                trainable_mask(variables['params'], config.model))
  repl = mesh_lib.replicated(mesh)
  state = jax.device_put(create_state(variables, tx, state_rng), repl)

  manager = ckpt_lib.make_manager(workdir, config.checkpoint_every, config.keep_checkpoints)
  if jax.process_index() == 0:
    ckpt_lib.save_config(workdir, config)
  restored, start = ckpt_lib.restore(manager, state)
  if restored is not None:
    state = jax.device_put(restored, repl)
    logging.info('resumed from step %d', start)
  start = int(state.step)

  step_fn = jax.jit(make_train_step(model, tx, config.model.backbone.norm == 'batch_norm',
                                    config.optim.get('recon_warmup_steps', 0)),
                    in_shardings=(repl, mesh_lib.data_sharded(mesh), repl, repl),
                    out_shardings=(repl, repl), donate_argnums=(0,))
  cv = jax.device_put(jnp.asarray(class_vectors), repl)
  cm = jax.device_put(jnp.asarray(class_valid), repl)

  writer = MetricWriter(workdir)
  it = make_iterator(start)
  bar = tqdm(total=total_steps, initial=start, desc='train', unit='step', dynamic_ncols=True,
             disable=jax.process_index() != 0)
  t_last = time.time()
  steps_since = 0
  try:
    for step in range(start, total_steps):
      batch = mesh_lib.global_batch(next(it), mesh)
      state, metrics = step_fn(state, batch, cv, cm)
      steps_since += 1
      done = step + 1
      # One host sync per step: steps take long enough that it costs nothing,
      # and no bad step goes unnoticed between log lines.
      if not bool(metrics['finite']):
        m = jax.device_get(metrics)
        bad = [k for k, v in m.items() if k != 'finite' and not np.isfinite(v)]
        raise NonFiniteLossError(
            f'non-finite value at step {done}: {", ".join(bad) or "gradient"}; the state was '
            f'not updated and the last good checkpoint is in {ckpt_lib.checkpoint_dir(workdir)}')
      if done % config.log_every == 0 or done == total_steps:
        m = jax.device_get(metrics)
        dt = (time.time() - t_last) / steps_since
        t_last, steps_since = time.time(), 0
        scalars = {k: v for k, v in m.items() if k != 'finite'}
        scalars.update(learning_rate=float(schedule(step)), step_time=dt,
                       images_per_sec=config.data.batch_size / dt)
        writer.write(done, scalars)
        bar.set_postfix(loss=f"{m['total']:.3f}", lr=f"{scalars['learning_rate']:.4f}")
      bar.update(1)
      ckpt_lib.save(manager, done, state, config.checkpoint_every, force=done == total_steps)
      if done == _SIGKILL_AT_STEP:
        # Fault injection for the preemption test: die without any cleanup
        # once this step's checkpoint is on disk.
        manager.wait_until_finished()
        os.kill(os.getpid(), signal.SIGKILL)
      if eval_fn is not None and config.get('eval_every') and done % config.eval_every == 0:
        scalars = eval_fn(state, done)
        if scalars:
          writer.write(done, scalars)
  finally:
    bar.close()
    manager.wait_until_finished()
    writer.close()
  return state
