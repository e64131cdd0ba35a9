"""Orbax checkpoints of the train state, with the config saved beside them.

Training, evaluation and inference all read checkpoints through this module.
Orbax writes each step into a temporary directory and renames it when the
save is complete, so a crash mid-save leaves the previous checkpoint as the
latest good one. Restoring verifies what it reads: a checkpoint damaged later
(a truncated file, lost metadata, non-finite values) is reported by step and
the newest good one is used instead. Beside the train state, each checkpoint
holds the input pipeline's state (item 'data': the next step and what the
order depends on), compared on resuming. The workdir may be a local folder or
a bucket URL (``gs://...``); orbax and :mod:`zsi_jax.storage` reach both.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from zsi_jax import config_check, storage
from zsi_jax.jsonio import read_json

logger = logging.getLogger(__name__)

CONFIG_FILE = 'config.json'


def checkpoint_dir(workdir: str) -> str:
  return storage.join(storage.absolute(workdir), 'checkpoints')


# A checkpoint holds the train state (item 'default', the only item of
# checkpoints written before the data item existed) and the input pipeline's
# state (item 'data': the next step and the order it belongs to).
ITEMS = ('default', 'data')


def make_manager(workdir: str, save_every: int, keep: int) -> ocp.CheckpointManager:
  """A CheckpointManager keeping the last ``keep`` checkpoints, saving every ``save_every`` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every,
                                         create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), item_names=ITEMS, options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, every: int,
         data_state: Optional[Dict[str, Any]] = None, force: bool = False) -> bool:
  """Saves ``state`` and the input pipeline's ``data_state`` at ``step`` when
  ``step`` is a multiple of ``every`` (or ``force``).

  The interval is checked here because orbax on its own also saves the first
  step of a run that has no checkpoint yet.
  """
  if not force and (every <= 0 or step % every):
    return False
  _PENDING[id(manager)] = step
  try:
    return manager.save(step, args=ocp.args.Composite(default=ocp.args.StandardSave(state),
                                                      data=ocp.args.JsonSave(data_state or {})),
                        force=True)
  except Exception as e:  # noqa: BLE001 (orbax and TensorStore raise many kinds)
    raise _write_error(manager, e) from e


def wait(manager: ocp.CheckpointManager):
  """Waits for the checkpoint being written; a failure is one
  :class:`CheckpointWriteError` naming the folder, the cause and what was kept."""
  try:
    manager.wait_until_finished()
  except Exception as e:  # noqa: BLE001
    raise _write_error(manager, e) from e


# The step each manager is writing (for the error when writing fails).
_PENDING: Dict[int, int] = {}


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (disk full, permissions, ...)."""


def _write_error(manager, error: BaseException) -> CheckpointWriteError:
  # The cause: the first line of the chain that names one (TensorStore wraps the OS error).
  causes = [error]
  while causes[-1].__cause__ is not None or causes[-1].__context__ is not None:
    causes.append(causes[-1].__cause__ or causes[-1].__context__)
  described = [storage.describe_error(c) for c in causes]
  known = [d for d in described if d in ('no space left on the device', 'read-only file system')
           or d.startswith('permission denied')]
  why = known[0] if known else described[0]
  try:
    manager.reload()
    kept = available_steps(manager)
  except Exception:  # noqa: BLE001 (listing may fail for the same reason)
    kept = []
  step = _PENDING.get(id(manager))
  kept_text = (f'kept: checkpoint(s) {", ".join(map(str, kept))}; the same command resumes '
               f'from step {kept[-1]}' if kept else 'no checkpoint was kept')
  return CheckpointWriteError(f'checkpoint {step} could not be written to {manager.directory}: '
                              f'{why}; {kept_text}')


class CheckpointError(ValueError):
  """A checkpoint that does not exist, cannot be read, or holds non-finite values."""


def available_steps(manager: ocp.CheckpointManager):
  """The steps of complete checkpoints, oldest first."""
  return sorted(manager.all_steps())


def _first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0][:300] if lines else type(error).__name__


def _read(manager: ocp.CheckpointManager, step: int, args):
  """One checkpoint, verified: readable and every float array finite.

  ``args``: orbax restore args, or a function of the step's folder returning them.
  """
  where = storage.join(str(manager.directory), str(step))
  try:
    state = manager.restore(step, args=args(where) if callable(args) else args)
  except Exception as e:  # orbax, TensorStore and OS errors alike mean: unreadable
    raise CheckpointError(f'checkpoint {step} ({where}) cannot be read: {_first_line(e)}') from e
  if isinstance(state, ocp.args.Composite):
    state = dict(state.items())
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    value = np.asarray(leaf)
    if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
      raise CheckpointError(f'checkpoint {step} ({where}) holds non-finite values in '
                            f'{jax.tree_util.keystr(path)}')
  return state


def _newest_good(manager: ocp.CheckpointManager, args, set_aside: bool):
  """(state, step) of the newest readable checkpoint, or (None, None) when there is none.

  Each damaged one on the way is reported; with ``set_aside`` it is renamed
  to ``<step>.damaged`` (never deleted), so training can write that step anew.
  """
  steps = available_steps(manager)
  damaged = []
  for step in reversed(steps):
    try:
      state = _read(manager, step, args)
    except CheckpointError as e:
      damaged.append(step)
      older = [s for s in steps if s < step]
      logger.warning('%s; %s', e, f'falling back to step {older[-1]}' if older
                     else 'no older checkpoint')
      if set_aside:
        folder = storage.join(str(manager.directory), str(step))
        storage.rename(folder, f'{folder}.damaged')
        logger.warning('moved the damaged checkpoint to %s.damaged', folder)
      continue
    if damaged:
      logger.warning('restored checkpoint %d (newer damaged: %s)', step,
                     ', '.join(map(str, damaged)))
    if set_aside and damaged:
      manager.reload()
    return state, step
  if damaged:
    if set_aside:
      manager.reload()
    raise CheckpointError(f'every checkpoint in {manager.directory} is damaged '
                          f'({", ".join(map(str, damaged))}); see the warnings above')
  return None, None


def restore(manager: ocp.CheckpointManager, abstract_state: Any):
  """The newest good checkpoint in the structure and shardings of ``abstract_state``.

  A damaged newer checkpoint is reported, moved aside and skipped (training
  then repeats the steps after the older one). Returns (state, step,
  data_state), or (None, None, None) when there is no checkpoint; data_state
  is None for checkpoints written before it was saved.
  """
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)

  def args(folder):
    items = dict(default=ocp.args.StandardRestore(target))
    if storage.isdir(storage.join(folder, 'data')):
      items['data'] = ocp.args.JsonRestore()
    return ocp.args.Composite(**items)

  steps = available_steps(manager)
  if steps:
    where = storage.join(str(manager.directory), str(steps[-1]))
    mismatch = _shape_mismatch(storage.join(where, 'default'), target)
    if mismatch:
      raise config_check.ResumeError(
          f'checkpoint {steps[-1]} ({where}) does not fit the model ({mismatch}): the config '
          'differs from the one it was trained with; nothing was changed')
  restored, step = _newest_good(manager, args, set_aside=True)
  if restored is None:
    return None, None, None
  return restored['default'], step, restored.get('data')


def _path_text(path) -> str:
  """A tree path as 'params/backbone/conv1/kernel', whatever containers hold it."""
  parts = []
  for k in path:
    parts.append(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))))
  return '/'.join(parts)


def _shape_mismatch(item_dir: str, target: Any) -> Optional[str]:
  """The first array whose saved shape differs from ``target``'s, as text; None
  when all fit or the metadata cannot be read (then reading decides)."""
  try:
    meta = ocp.StandardCheckpointHandler().metadata(epath.Path(item_dir))
  except Exception:  # noqa: BLE001 (unreadable metadata is damage, judged when reading)
    return None
  if meta is None:
    return None
  saved = {_path_text(p): tuple(m.shape) for p, m in
           jax.tree_util.tree_flatten_with_path(meta.tree)[0] if hasattr(m, 'shape')}
  for path, leaf in jax.tree_util.tree_flatten_with_path(target)[0]:
    key = _path_text(path)
    if key in saved and saved[key] != tuple(leaf.shape):
      return f'{key}: {saved[key]} saved, {tuple(leaf.shape)} now'
  return None


def latest_step(workdir: str) -> Optional[int]:
  """The newest complete checkpoint's step in ``workdir``, or None."""
  folder = checkpoint_dir(workdir)
  if not storage.isdir(folder):
    return None
  manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(create=False))
  try:
    steps = available_steps(manager)
  finally:
    manager.close()
  return steps[-1] if steps else None


def _restore_here(item_dir: str):
  """Restore args that put every array of the checkpoint item at ``item_dir`` on
  this process's first device, whatever topology wrote it: a checkpoint of a
  pod slice or a multi-GPU run restores in one process (eval.py, a notebook)."""
  meta = ocp.StandardCheckpointHandler().metadata(epath.Path(item_dir))
  if meta is None:
    return ocp.args.StandardRestore()
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here) if hasattr(m, 'shape')
      else m, meta.tree)
  return ocp.args.StandardRestore(target)


def restore_variables(workdir: str, step: Optional[int] = None) -> Tuple[Dict[str, Any], int]:
  """Model variables (params + other collections) of a checkpoint, without the optimiser,
  on this process's first device.

  ``step`` defaults to the newest good checkpoint (damaged newer ones are
  reported and skipped, not moved). Returns (variables, step).
  """
  folder = checkpoint_dir(workdir)
  if not storage.isdir(folder):
    raise FileNotFoundError(f'no checkpoint in {folder}')
  manager = ocp.CheckpointManager(folder, options=ocp.CheckpointManagerOptions(create=False))
  try:
    steps = available_steps(manager)
    if not steps:
      raise FileNotFoundError(f'no checkpoint in {folder}')
    args = lambda folder: _restore_here(storage.join(folder, 'default'))  # noqa: E731
    if step is None:
      state, step = _newest_good(manager, args, set_aside=False)
    elif step not in steps:
      raise CheckpointError(f'no checkpoint {step} in {folder}; available: '
                            f'{", ".join(map(str, steps))}')
    else:
      state = _read(manager, step, args)
  finally:
    manager.close()
  return {'params': state['params'], **state['model_state']}, step


def save_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Writes the experiment config as JSON beside the checkpoints (for eval and the Predictor)."""
  path = storage.join(workdir, CONFIG_FILE)
  # Atomic: readers never see a half-written file.
  storage.write_text(path, config.to_json_best_effort(indent=2, sort_keys=True))
  return path


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads the config saved by :func:`save_config`, completed to today's keys
  (``config_check.complete``), so workdirs of earlier versions still load."""
  path = storage.join(workdir, CONFIG_FILE)
  if not storage.exists(path):
    raise FileNotFoundError(f'no {CONFIG_FILE} in {workdir!r}: is it a zsi_jax training workdir?')
  d = read_json(path)
  try:
    return config_check.complete(_lists_to_tuples(d))
  except config_check.ConfigError as e:
    raise config_check.ConfigError(f'{path}: {e}') from None


def _lists_to_tuples(x):
  if isinstance(x, dict):
    return {k: _lists_to_tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_lists_to_tuples(v) for v in x)
  return x
