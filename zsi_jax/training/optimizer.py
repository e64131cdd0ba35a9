"""The optimiser of the authors' recipe (docs/REFERENCE_NOTES.md): SGD + momentum, warm-up, step decay, clipping.

Frozen parameters (frozen backbone stages) go through ``optax.set_to_zero``
inside a ``multi_transform``: they get no update and no optimiser state.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import optax


def learning_rate_schedule(base_lr: float, warmup_steps: int, warmup_ratio: float,
                           decay_steps, decay_factor: float = 0.1):
  """Linear warm-up from ``base_lr * warmup_ratio``, then x ``decay_factor`` at each decay step.

  Args:
    base_lr: peak learning rate.
    warmup_steps: length of the linear warm-up (0 for none).
    warmup_ratio: starting fraction of ``base_lr``.
    decay_steps: steps at which the rate is multiplied by ``decay_factor``.
  Returns:
    an optax schedule ``step -> lr``.
  """
  decay = optax.piecewise_constant_schedule(
      base_lr, {int(s): decay_factor for s in sorted(decay_steps)})
  if warmup_steps <= 0:
    return decay

  def schedule(step):
    frac = jax.numpy.minimum(step / warmup_steps, 1.0)
    warm = warmup_ratio + (1.0 - warmup_ratio) * frac
    return decay(step) * warm
  return schedule


def base_learning_rate(config) -> float:
  """``optim.learning_rate``, scaled linearly with the global batch when
  ``optim.reference_batch`` is set (the rate is the reference batch's; e.g. COCO:
  0.01 at 8 images, so 16 images on 8 devices train at 0.02)."""
  o = config.optim
  ref = o.reference_batch
  return o.learning_rate * (config.data.batch_size / ref if ref else 1.0)


def make_optimizer(config, steps_per_epoch: int, trainable: Optional[Any] = None):
  """Builds the optax transformation.

  Args:
    config: the experiment ConfigDict (uses ``config.optim`` and ``config.num_epochs``).
    steps_per_epoch: optimizer steps per epoch, to place the decay steps.
    trainable: pytree of bools matching the params (False = frozen), or None.
  Returns:
    (optax.GradientTransformation, schedule).
  """
  o = config.optim
  schedule = learning_rate_schedule(
      base_learning_rate(config), o.warmup_steps, o.warmup_ratio,
      [int(e * steps_per_epoch) for e in o.decay_epochs], o.decay_factor)
  parts = []
  if o.clip_norm:
    parts.append(optax.clip_by_global_norm(o.clip_norm))
  if o.weight_decay:
    parts.append(optax.add_decayed_weights(o.weight_decay))
  parts.append(optax.sgd(schedule, momentum=o.momentum or None))
  tx = optax.chain(*parts)
  if trainable is not None:
    labels = jax.tree_util.tree_map(lambda t: 'train' if t else 'frozen', trainable)
    tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)
  return tx, schedule
