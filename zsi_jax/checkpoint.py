"""Orbax checkpoints of the train state, with the config saved beside them.

Training, evaluation and inference all read checkpoints through this module.
Orbax writes each step into a temporary directory and renames it when the
save is complete, so a crash mid-save leaves the previous checkpoint as the
latest good one. The data position needs no state of its own: the input order
is a pure function of (seed, step), so restoring the step restores the iterator.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import orbax.checkpoint as ocp

from zsi_jax import config_check

CONFIG_FILE = 'config.json'


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def make_manager(workdir: str, save_every: int, keep: int) -> ocp.CheckpointManager:
  """A CheckpointManager keeping the last ``keep`` checkpoints, saving every ``save_every`` steps."""
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=save_every,
                                         create=True, enable_async_checkpointing=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, every: int,
         force: bool = False) -> bool:
  """Saves ``state`` at ``step`` when ``step`` is a multiple of ``every`` (or ``force``).

  The interval is checked here because orbax on its own also saves the first
  step of a run that has no checkpoint yet.
  """
  if not force and (every <= 0 or step % every):
    return False
  return manager.save(step, args=ocp.args.StandardSave(state), force=True)


def restore(manager: ocp.CheckpointManager, abstract_state: Any, step: Optional[int] = None):
  """Restores the given (or latest) step into the structure and shardings of ``abstract_state``.

  Returns (state, step) or (None, None) when there is no checkpoint.
  """
  step = manager.latest_step() if step is None else step
  if step is None:
    return None, None
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
  state = manager.restore(step, args=ocp.args.StandardRestore(target))
  return state, step


def restore_variables(workdir: str, step: Optional[int] = None) -> Tuple[Dict[str, Any], int]:
  """Model variables (params + other collections) of a checkpoint, without the optimiser.

  Returns (variables, step); ``step`` defaults to the latest.
  """
  manager = ocp.CheckpointManager(checkpoint_dir(workdir))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {checkpoint_dir(workdir)}')
  state = manager.restore(step, args=ocp.args.StandardRestore())
  return {'params': state['params'], **state['model_state']}, step


def save_config(workdir: str, config: ml_collections.ConfigDict) -> str:
  """Writes the experiment config as JSON beside the checkpoints (for eval and the Predictor)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(tmp, path)  # atomic: readers never see a half-written file
  return path


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """Reads the config saved by :func:`save_config`, completed to today's keys
  (``config_check.complete``), so workdirs of earlier versions still load."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'no {CONFIG_FILE} in {workdir!r}: is it a zsi_jax training workdir?')
  with open(path) as f:
    try:
      d = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path} is not valid JSON: {e}') from e
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
