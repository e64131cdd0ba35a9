"""Sharding rules, in one place (big_vision style).

A 1-D mesh ``('data',)`` over all devices of all processes: batches are split
along their leading axis, parameters and optimiser state are replicated.
Evaluation and inference run on each process's own devices
(:func:`make_local_mesh`) and meet only to gather results
(:func:`gather_objects`).
"""
from __future__ import annotations

import pickle
from typing import Any, List

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  """A ('data',) mesh over every device of every process."""
  # Auto axes: XLA propagates the batch sharding through the model; explicit
  # sharding types would require annotating every reshape.
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


def make_local_mesh() -> Mesh:
  """A ('data',) mesh over this process's devices only (no cross-process traffic)."""
  return Mesh(np.asarray(jax.local_devices()), ('data',))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def check_batch_size(global_batch: int, mesh: Mesh):
  """Fails early (before compiling) when the batch cannot be split evenly."""
  n = mesh.devices.size
  if global_batch % n:
    raise ValueError(f'config.data.batch_size={global_batch} is not divisible by the '
                     f'{n} devices of the mesh; use a multiple of {n}')
  if global_batch % jax.process_count():
    raise ValueError(f'config.data.batch_size={global_batch} is not divisible by the '
                     f'{jax.process_count()} processes')


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Turns this process's slice of the batch into global arrays sharded over 'data'.

  Args:
    local_batch: dict of NumPy arrays ``[B_local, ...]`` (this process's rows).
  Returns:
    dict of jax.Array ``[B_global, ...]`` sharded along the batch axis.
  """
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def local_values(tree):
  """A pytree of arrays as this process's NumPy copies (one replica of arrays
  replicated over every process's devices, e.g. a train state)."""
  def one(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)
  return jax.tree_util.tree_map(one, tree)


def gather_objects(value: Any) -> List[Any]:
  """Every process's ``value`` (anything picklable), in process order, on every process."""
  if jax.process_count() == 1:
    return [value]
  from jax.experimental import multihost_utils
  data = np.frombuffer(pickle.dumps(value), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.int64(data.size))).ravel()
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  every = np.asarray(multihost_utils.process_allgather(padded))
  return [pickle.loads(every[i, :int(n)].tobytes()) for i, n in enumerate(sizes)]
