"""The data-parallel wrapper: the one place that maps per-device code over devices.

Per-device functions (train chunk, evaluation) are written against the named
axis ``AXIS_NAME`` (``jax.lax.pmean(..., AXIS_NAME)``, ``jax.lax.axis_index``)
and mapped here with ``jax.pmap``. Moving to ``jax.shard_map`` touches this file
only. Arrays that enter a mapped function carry a leading device axis and are
placed with the same sharding pmap produces, so no call reshards its inputs.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS_NAME = "batch"
PyTree = Any


def device_count() -> int:
  """Devices this process feeds (all of them, on a single host)."""
  return jax.local_device_count()


def data_parallel(fn: Callable, *, static_argnums: Sequence[int] = (),
                  donate_argnums: Sequence[int] = ()) -> Callable:
  """jit-compiles ``fn`` and maps it over all local devices along ``AXIS_NAME``."""
  return jax.pmap(fn, axis_name=AXIS_NAME, static_broadcasted_argnums=tuple(static_argnums),
                  donate_argnums=tuple(donate_argnums))


def _sharding() -> NamedSharding:
  mesh = Mesh(np.asarray(jax.local_devices()), (AXIS_NAME,))
  return NamedSharding(mesh, PartitionSpec(AXIS_NAME))


def replicate(tree: PyTree) -> PyTree:
  """One copy per device, stacked on a leading device axis."""
  n, sharding = device_count(), _sharding()
  def put(x):
    x = np.asarray(x)
    return jax.device_put(np.broadcast_to(x[None], (n, *x.shape)), sharding)
  return jax.tree.map(put, tree)


def shard(tree: PyTree) -> PyTree:
  """Splits the leading axis evenly: [n * b, ...] -> [n, b, ...], device d gets row d."""
  n, sharding = device_count(), _sharding()
  def put(x):
    x = np.asarray(x)
    return jax.device_put(x.reshape((n, x.shape[0] // n, *x.shape[1:])), sharding)
  return jax.tree.map(put, tree)


def unreplicate(tree: PyTree) -> PyTree:
  """Device 0's copy of a replicated tree, as host numpy arrays."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], tree)


def unshard(tree: PyTree) -> PyTree:
  """Inverse of ``shard``: [n, b, ...] on devices -> [n * b, ...] on the host."""
  return jax.tree.map(lambda x: np.asarray(x).reshape((-1, *x.shape[2:])), tree)


def per_device(global_size: int, field: str) -> int:
  """global_size / device count, or a clear error naming the config field."""
  n = device_count()
  if global_size % n:
    valid = ", ".join(str(n * k) for k in range(1, 5))
    raise ValueError(
        f"{field}={global_size} does not divide by the {n} devices in use; "
        f"use a multiple of {n} (e.g. {valid}, ...).")
  return global_size // n
