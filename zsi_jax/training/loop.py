"""The training loop: config -> mesh -> data -> model -> jit step -> loop (big_vision style).

Reads top to bottom; ``train.py`` is a thin absl wrapper around :func:`train`.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm import tqdm

from zsi_jax import checkpoint as ckpt_lib
from zsi_jax import config_check, storage
from zsi_jax.data import datasets
from zsi_jax.data.datasets import pad_class_vectors
from zsi_jax.training import mesh as mesh_lib
from zsi_jax.training import preemption, workdir_lock
from zsi_jax.training.metrics import MetricWriter
from zsi_jax.training.train_step import TrainState, build_training

logger = logging.getLogger(__name__)

# Called after every step, once its checkpoint (if any) has been handed to
# orbax: ``hook(step, state, checkpoint_manager, local_batch)``.
StepHook = Callable[[int, TrainState, Any, Dict[str, np.ndarray]], None]


class NonFiniteLossError(RuntimeError):
  """Raised when a step produces a NaN/inf loss or gradient."""


@dataclasses.dataclass(frozen=True)
class TrainingClasses:
  """What the model is built from besides the config.

  Attributes:
    class_vectors: [K, D] the training (seen) classes' word vectors.
    background: [D] the background word vector (``v_b``'s start).
    image_size: (H, W) of the padded canvas.
    vocabulary: [V, D] the box head's fixed vocabulary, or None.
  """
  class_vectors: np.ndarray
  background: np.ndarray
  image_size: Tuple[int, int]
  vocabulary: Optional[np.ndarray] = None


def training_data(config: ml_collections.ConfigDict, info) -> Tuple[Any, TrainingClasses]:
  """The seen-class training loader and the classes of :func:`train` for a dataset.

  Args:
    config: experiment config (``data.*``, ``seed``).
    info: ``datasets.DatasetInfo`` of the dataset.
  Returns:
    (loader, classes): pass ``loader.train_iterator``, ``loader.steps_per_epoch``
    and ``loader.plan`` with ``classes`` to :func:`train`.
  """
  from zsi_jax.data.loaders import split_loader
  loader = split_loader(config, info, 'train', info.cat_ids(info.seen), train=True)
  vocabulary = None
  if config.data.vocabulary:
    vocabulary = datasets.read_vocabulary_file(
        storage.join(info.root, config.data.vocabulary),
        config.model.box_head.vocabulary_size, int(info.vectors.shape[1]))
  return loader, TrainingClasses(info.vectors_of(info.seen), info.background,
                                 tuple(config.data.image_size), vocabulary)


def train(config: ml_collections.ConfigDict, workdir: str,
          classes: TrainingClasses,
          make_iterator: Callable[[int], Iterator[Dict[str, np.ndarray]]],
          steps_per_epoch: int,
          total_steps: Optional[int] = None,
          eval_fn: Optional[Callable[[TrainState, int], Dict[str, float]]] = None,
          hooks: Sequence[StepHook] = (),
          data_order: Optional[Dict[str, Any]] = None) -> TrainState:
  """Trains (or resumes) and returns the final state (None when the workdir is
  already trained to ``total_steps``).

  The run holds ``workdir`` while it trains (``workdir_lock``). On SIGTERM or
  SIGINT it finishes the step in flight, saves its checkpoint and raises
  ``preemption.Preempted``.

  Args:
    config: experiment config.
    workdir: checkpoints, config.json, metrics.jsonl and tensorboard/ go here
      (a local folder or a bucket URL).
    eval_fn: called by every process (evaluation is distributed); its scalars
      are logged by process 0.
    classes: the training classes, background vector, canvas and vocabulary.
    make_iterator: ``start_step -> iterator`` of this process's local batches
      (dicts of NumPy arrays), positioned at ``start_step``.
    steps_per_epoch: optimizer steps per epoch.
    total_steps: defaults to ``num_epochs * steps_per_epoch``.
    eval_fn: optional periodic evaluation ``(state, step) -> scalars``.
    hooks: called after every step (:data:`StepHook`).
    data_order: what the input order is a function of besides the step (the
      loader's ``describe()``); saved with every checkpoint beside the next
      step, and compared on resuming.
  """
  config_check.validate(config)
  # A misspelt bucket or a read-only path fails now, not after compiling.
  storage.check_writable(workdir, 'workdir')
  total_steps = int(total_steps or config.num_epochs * steps_per_epoch)
  with workdir_lock.hold(workdir), preemption.StopSignals() as signals:
    if check_resume(config, workdir, total_steps):
      return None
    return _train(config, workdir, classes, make_iterator, steps_per_epoch, total_steps, eval_fn,
                  hooks, data_order, signals)


def check_resume(config: ml_collections.ConfigDict, workdir: str, total_steps: int) -> bool:
  """Compares ``config`` with the one a workdir with checkpoints was trained with,
  before anything is compiled or written.

  Settings that change what a step computes or the data order are refused
  (``config_check.ResumeError``, each key with both values); the others
  (length, cadences, workers, paths) are logged. Returns True when the
  workdir is already trained to ``total_steps`` or beyond: nothing to do.
  """
  latest = ckpt_lib.latest_step(workdir)
  if latest is None or not storage.exists(storage.join(workdir, ckpt_lib.CONFIG_FILE)):
    return False
  saved = ckpt_lib.load_config(workdir)
  refused, accepted = config_check.resume_changes(saved, config)
  if refused:
    changes = '; '.join(f'{k} = {a!r} there, {b!r} now' for k, a, b in refused)
    raise config_check.ResumeError(
        f'{workdir} was trained with another config ({changes}): these change what a step '
        'computes or the order of the data; resume with the values in its config.json, or '
        'train in a new --workdir. Nothing was changed')
  for key, old, new in accepted:
    logger.info('resuming with %s = %r (was %r)', key, new, old)
  if latest >= total_steps:
    logger.info('%s is trained to step %d, at or beyond total_steps=%d: nothing to train '
                '(raise --config.total_steps to go on)', workdir, latest, total_steps)
    return True
  return False


def _train(config, workdir, classes: TrainingClasses, make_iterator, steps_per_epoch, total_steps, eval_fn, hooks,
           data_order, signals: preemption.StopSignals) -> TrainState:
  mesh = mesh_lib.make_mesh()
  mesh_lib.check_batch_size(config.data.batch_size, mesh)
  seen = len(classes.class_vectors)
  class_vectors, class_valid = pad_class_vectors(classes.class_vectors,
                                                 config.data.max_classes or seen)
  run = build_training(config, classes.background, seen, classes.image_size, steps_per_epoch,
                       total_steps, vocabulary=classes.vocabulary)
  repl = mesh_lib.replicated(mesh)
  state = jax.device_put(run.state, repl)

  manager = ckpt_lib.make_manager(workdir, config.checkpoint_every, config.keep_checkpoints)
  if jax.process_index() == 0:
    ckpt_lib.save_config(workdir, config)
  restored, start, data_state = ckpt_lib.restore(manager, state)
  if restored is not None:
    state = jax.device_put(restored, repl)
    logger.info('resumed from step %d', start)
    _check_data_state(data_state, data_order, int(state.step))
  start = int(state.step)

  step_fn = jax.jit(run.step, in_shardings=(repl, mesh_lib.data_sharded(mesh), repl, repl),
                    out_shardings=(repl, repl), donate_argnums=(0,))
  cv = jax.device_put(jnp.asarray(class_vectors), repl)
  cm = jax.device_put(jnp.asarray(class_valid), repl)

  writer = MetricWriter(workdir, resume_step=start)
  it = make_iterator(start)
  # The bar starts after the first step, so its rate and ETA leave out compilation.
  bar = None
  if start < total_steps:
    logger.info('compiling the train step (once per run)')
  t_last = time.time()
  steps_since = 0
  try:
    for step in range(start, total_steps):
      local = next(it)
      batch = mesh_lib.global_batch(local, mesh)
      state, metrics = step_fn(state, batch, cv, cm)
      steps_since += 1
      done = step + 1
      # One host sync per step: steps take long enough that it costs nothing,
      # and no bad step goes unnoticed between log lines.
      if not bool(metrics['finite']):
        m = jax.device_get(metrics)
        bad = [k for k, v in m.items() if k != 'finite' and not np.isfinite(v)]
        ckpt_lib.wait(manager)
        last = manager.latest_step()
        kept = (f'the last good checkpoint is step {last} in {ckpt_lib.checkpoint_dir(workdir)}'
                if last is not None else
                f'no checkpoint has been written yet (every {config.checkpoint_every} steps)')
        raise NonFiniteLossError(f'non-finite value at step {done}: {", ".join(bad) or "gradient"}'
                                 f'; the state was not updated and {kept}')
      logged = done % config.log_every == 0 or done == total_steps
      if logged:
        m = jax.device_get(metrics)
        dt = (time.time() - t_last) / steps_since
        t_last, steps_since = time.time(), 0
        scalars = {k: v for k, v in m.items() if k != 'finite'}
        scalars.update(learning_rate=float(run.schedule(step)), step_time=dt,
                       images_per_sec=config.data.batch_size / dt)
        writer.write(done, scalars)
      if bar is None:
        bar = tqdm(total=total_steps, initial=done, desc='train', unit='step',
                   dynamic_ncols=True, disable=jax.process_index() != 0)
      else:
        bar.update(1)
      if logged:
        bar.set_postfix(loss=f"{m['total']:.3f}", lr=f"{scalars['learning_rate']:.4f}")
      data_state = dict(next_step=done, **(data_order or {}))
      if ckpt_lib.save(manager, done, state, config.checkpoint_every, data_state=data_state,
                       force=done == total_steps):
        writer.flush()  # the logs hold every step up to the newest checkpoint, even in a bucket
      for hook in hooks:
        hook(done, state, manager, local)
      if eval_fn is not None and config.eval_every and done % config.eval_every == 0:
        scalars = eval_fn(state, done)
        if scalars:
          writer.write(done, scalars)
      stop = signals.agreed() if done < total_steps else 0
      if stop:
        if manager.latest_step() != done:
          ckpt_lib.save(manager, done, state, config.checkpoint_every, data_state=data_state,
                        force=True)
        ckpt_lib.wait(manager)
        writer.flush()
        raise preemption.Preempted(done, stop, ckpt_lib.checkpoint_dir(workdir))
  finally:
    if bar is not None:
      bar.close()
    if hasattr(it, 'close'):          # stops a pipeline's threads and worker processes
      it.close()
    ckpt_lib.wait(manager)
    writer.close()
  return state


def _check_data_state(saved: Optional[Dict[str, Any]], order: Optional[Dict[str, Any]],
                      step: int):
  """Compares the input state saved with a checkpoint with this run's."""
  if saved is None:
    return                            # written before the input state was saved
  if saved.get('next_step') != step:
    raise ValueError(f'the checkpoint of step {step} holds the input state of step '
                     f'{saved.get("next_step")}: it is inconsistent')
  changed = [f'{k} {saved[k]} -> {v}' for k, v in (order or {}).items()
             if k in saved and saved[k] != v and k != 'pipeline']
  if changed:
    logger.warning('the input order differs from the checkpoint\'s (%s): the resumed run '
                   'continues at step %d of the new order, not where the old one stopped',
                   ', '.join(changed), step)
