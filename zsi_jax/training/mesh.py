"""Sharding rules, in one place (big_vision style).

A 1-D mesh ``('data',)`` over all devices of all processes: batches are split
along their leading axis, parameters and optimiser state are replicated.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh() -> Mesh:
  """A ('data',) mesh over every device of every process."""
  # Auto axes: XLA propagates the batch sharding through the model; explicit
  # sharding types would require annotating every reshape.
  return jax.make_mesh((jax.device_count(),), ('data',),
                       axis_types=(jax.sharding.AxisType.Auto,))


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
