"""Train state, the jit-compiled train step, and the setup that builds both from a config.

The step is written for the global batch; sharding is decided by the caller
(``jax.jit`` with ``in_shardings``/``out_shardings`` over a ('data',) mesh), as
in big_vision. A non-finite loss or gradient leaves the state unchanged and is
reported in the metrics, so the host can stop with the last good state.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from zsi_jax.modeling import convert
from zsi_jax.modeling import resnet as resnet_lib
from zsi_jax.modeling.build import build_model, init_variables
from zsi_jax.modeling.zsi import ZSIModel
from zsi_jax.training.optimizer import make_optimizer

logger = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs.

  step: scalar int32; params: trainable parameters; opt_state: optax state;
  model_state: the other variable collections (BatchNorm statistics, frozen
  BatchNorm constants, the fixed vocabulary); rng: base PRNG key (per-step keys
  are ``fold_in(rng, step)``, so a resumed run draws the same samples).
  """
  step: jnp.ndarray
  params: Any
  opt_state: Any
  model_state: Any
  rng: jnp.ndarray


def create_state(variables: Dict[str, Any], tx: optax.GradientTransformation, rng) -> TrainState:
  """Wraps initial variables into a TrainState."""
  variables = dict(variables)
  params = variables.pop('params')
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    model_state=variables, rng=rng)


def make_train_step(model: ZSIModel, tx: optax.GradientTransformation, mutable_stats: bool,
                    recon_warmup_steps: int = 0):
  """Returns ``step(state, batch, class_vectors, class_valid) -> (state, metrics)``.

  Args:
    model: the ZSI model.
    tx: the optimiser (frozen parameters already masked out).
    mutable_stats: True when the backbone uses trainable BatchNorm whose
      running statistics are updated in training.
    recon_warmup_steps: > 0 ramps both reconstruction weights linearly from 0
      to their configured values over this many steps.
  """

  def step(state: TrainState, batch, class_vectors, class_valid):
    key = jax.random.fold_in(state.rng, state.step)
    # Reconstruction weight ramp (0 -> 1 over recon_warmup_steps): see
    # configs/shapes.py for why a from-scratch model needs it.
    recon_scale = (jnp.minimum(state.step.astype(jnp.float32) / recon_warmup_steps, 1.0)
                   if recon_warmup_steps > 0 else 1.0)

    def loss_fn(params):
      variables = {'params': params, **state.model_state}
      if mutable_stats:
        (terms, aux), updates = model.apply(variables, batch, class_vectors, class_valid, key,
                                            True, recon_scale, method=ZSIModel.losses,
                                            mutable=['batch_stats'])
      else:
        terms, aux = model.apply(variables, batch, class_vectors, class_valid, key, True,
                                 recon_scale, method=ZSIModel.losses)
        updates = {}
      return terms['total'], (terms, aux, updates)

    (_, (terms, aux, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, param_updates)
    model_state = {**state.model_state, **updates}

    finite = jnp.isfinite(grad_norm)
    for v in terms.values():
      finite &= jnp.isfinite(v)
    # Keep the last good state on a non-finite step; the host stops the run.
    keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_state = state.replace(
        step=state.step + finite.astype(jnp.int32),
        params=keep(params, state.params),
        opt_state=keep(opt_state, state.opt_state),
        model_state=keep(model_state, state.model_state))
    metrics = dict(terms, **{k: v.astype(jnp.float32) for k, v in aux.items()},
                   grad_norm=grad_norm, finite=finite)
    return new_state, metrics

  return step


@dataclasses.dataclass
class Training:
  """What a training run is made of; ``step`` is not jit-compiled yet.

  ``schedule``: the learning rate as a function of the step.
  """
  model: ZSIModel
  tx: optax.GradientTransformation
  schedule: Callable[[int], Any]
  state: TrainState
  step: Callable[..., Any]


def trainable_mask(params, frozen_stages: int) -> Any:
  """Pytree of bools over the params: False for frozen backbone stages."""
  mask = jax.tree_util.tree_map(lambda _: True, params)
  if frozen_stages:
    mask = dict(mask, backbone=resnet_lib.trainable_mask(params['backbone'], frozen_stages))
  return mask


def build_training(config: ml_collections.ConfigDict, background, num_train_classes: int,
                   image_size, steps_per_epoch: int, total_steps: int,
                   vocabulary: Optional[Any] = None) -> Training:
  """Model, optimiser, initial state and train step of an experiment config.

  Args:
    config: the experiment config.
    background: the dataset's background word vector [D].
    num_train_classes: seen classes.
    image_size: (H, W) of the padded canvas.
    steps_per_epoch: optimiser steps per epoch.
    total_steps: length of the run (with ``config.total_steps`` set, the
      epoch-based schedule is stretched to it, so the decays still fall at the
      same fractions of training).
    vocabulary: [V, D] for a box head with a fixed vocabulary.
  """
  model = build_model(config.model, background, num_train_classes, training=True)
  init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
  variables = init_variables(model, init_rng, tuple(image_size), vocabulary=vocabulary)
  if config.init.backbone:
    # ImageNet weights for a fresh run (a resumed run restores over them).
    variables = convert.load_backbone_into(variables, config.init.backbone,
                                           config.model.backbone.depth)
    logger.info('backbone initialised from %s', config.init.backbone)
  sched_epoch = total_steps / config.num_epochs if config.total_steps else steps_per_epoch
  tx, schedule = make_optimizer(config, sched_epoch,
                                trainable_mask(variables['params'],
                                               config.model.backbone.frozen_stages))
  step = make_train_step(model, tx, config.model.backbone.norm == 'batch_norm',
                         config.optim.recon_warmup_steps)
  return Training(model, tx, schedule, create_state(variables, tx, state_rng), step)
