"""The data-parallel wrapper: the one place that maps per-device code over devices.

Per-device functions (train chunk, evaluation) are written against the named
axis ``AXIS_NAME`` (``jax.lax.pmean(..., AXIS_NAME)``, ``jax.lax.axis_index``)
and mapped here with ``jax.pmap``. Moving to ``jax.shard_map`` touches this file
only. Arrays that enter a mapped function carry a leading device axis and are
placed with the same sharding pmap produces, so no call reshards its inputs.

Several processes (a TPU pod slice: one per host) run the same program; the
mapped function spans every device of every process, and each process feeds
and reads only its own (local) devices. So sizes divide by the global
``device_count()``, while the leading axis of what a process passes in or gets
back is its ``local_device_count()``. ``jax.lax.axis_index`` inside the mapped
function is the device's global index, so each device picks its own slice of
the global batch. Host reads go through the process's addressable shards
(``unreplicate``), and ``unshard`` gathers every process's rows, so each process
sees whole results.

Joining a multi-process job (``initialize``, at the end of this module):

On a pod slice every host runs the same program and feeds its own devices; the
processes find each other through ``jax.distributed.initialize``, which must
run before anything touches a JAX backend. The entry points therefore call
``initialize()`` first. It joins a job only when the environment says there is
one, so a single-process run (a laptop, a GPU box, the tests) calls nothing and
contacts nothing:

1. ``VAE_JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``VAE_JAX_NUM_PROCESSES``
   and ``VAE_JAX_PROCESS_ID``, set on every process: joins that job. JAX reads
   only ``JAX_COORDINATOR_ADDRESS`` from the environment, not the process count
   or id, so all three are read here and passed explicitly.
2. ``VAE_JAX_DISTRIBUTED=off``: never joins (what follows is skipped).
3. ``VAE_JAX_DISTRIBUTED=auto``: jax's own cluster detection (Cloud TPU, Slurm,
   Open MPI, Kubernetes) finds the coordinator, process count and id.
4. A Cloud TPU VM whose TPUs JAX will use (jax sets a flag at import when
   libtpu and TPU chips are present): as ``auto``; the VM's metadata server
   names the slice's workers, so a single-host VM becomes a job of one process.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS_NAME = "batch"
PyTree = Any


def device_count() -> int:
  """Devices of the whole job, all processes together: the global batch divides by it."""
  return jax.device_count()


def local_device_count() -> int:
  """Devices this process feeds (all of them, on a single host)."""
  return jax.local_device_count()


def data_parallel(fn: Callable, *, static_argnums: Sequence[int] = (),
                  donate_argnums: Sequence[int] = ()) -> Callable:
  """jit-compiles ``fn`` and maps it over all devices along ``AXIS_NAME``.

  Each process passes (and gets back) arrays with a leading axis of its local devices.
  """
  return jax.pmap(fn, axis_name=AXIS_NAME, static_broadcasted_argnums=tuple(static_argnums),
                  donate_argnums=tuple(donate_argnums))


def mean(tree: PyTree, axis_name: str = AXIS_NAME) -> PyTree:
  """``jax.lax.pmean`` over the devices, for per-device code; on one device, the tree itself.

  The mean over one device is the value itself, bit for bit, but XLA:CPU still
  runs the all-reduce as a copy of every array: for the gradients, one more pass
  over all the parameters' bytes each step.
  """
  if jax.lax.axis_size(axis_name) == 1:
    return tree
  return jax.lax.pmean(tree, axis_name)


def gather(x: jax.Array, axis_name: str = AXIS_NAME) -> jax.Array:
  """Every device's ``x`` [b, ...] concatenated in device order ([devices * b, ...]), for
  per-device code whose term couples the examples of the global batch (device i's slice
  of a global batch is its rows i*b..(i+1)*b, as ``pipeline.local_batch_indices`` lays
  batches out). Differentiable: its transpose sums each device's cotangents back to
  the rows it owns. On one device, ``x`` itself.
  """
  if jax.lax.axis_size(axis_name) == 1:
    return x
  return jax.lax.all_gather(x, axis_name, tiled=True)


def _sharding() -> NamedSharding:
  mesh = Mesh(np.asarray(jax.local_devices()), (AXIS_NAME,))
  return NamedSharding(mesh, PartitionSpec(AXIS_NAME))


def replicate(tree: PyTree) -> PyTree:
  """One copy per local device, stacked on a leading device axis."""
  n, sharding = local_device_count(), _sharding()
  def put(x):
    x = np.asarray(x)
    return jax.device_put(np.broadcast_to(x[None], (n, *x.shape)), sharding)
  return jax.tree.map(put, tree)


def _block() -> slice:
  """This process's devices' rows among all devices' (processes in order)."""
  local, count = local_device_count(), jax.process_count()
  if local * count != device_count():
    raise ValueError(f"Processes feed unequal numbers of devices ({device_count()} devices, "
                     f"{count} processes, {local} here); vae_jax needs the same on each.")
  return slice(jax.process_index() * local, (jax.process_index() + 1) * local)


def shard(tree: PyTree) -> PyTree:
  """Splits the leading axis evenly over all devices: [n * b, ...] -> [n, b, ...].

  Every process passes the same global array; it keeps its block of rows (process
  p: rows p * local ... (p + 1) * local - 1) on its local devices, in order.
  """
  n, block, sharding = device_count(), _block(), _sharding()
  def put(x):
    x = np.asarray(x)
    return jax.device_put(x.reshape((n, x.shape[0] // n, *x.shape[1:]))[block], sharding)
  return jax.tree.map(put, tree)


def unshard(tree: PyTree) -> PyTree:
  """Inverse of ``shard``: [local, b, ...] on devices -> [n * b, ...] on every host.

  With several processes, the blocks are gathered (``process_allgather``, in
  process order), so each process gets every row.
  """
  rows = jax.tree.map(lambda x: np.asarray(x).reshape((-1, *x.shape[2:])), tree)
  if jax.process_count() == 1:
    return rows
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(rows, tiled=True))


def unreplicate(tree: PyTree) -> PyTree:
  """The first local device's copy of a replicated tree, as host numpy arrays.

  Also for per-step train metrics, which are ``pmean``-ed (the same on every
  device). Reads only one addressable shard, never a device of another process.
  """
  def first(x):
    if isinstance(x, jax.Array):
      return np.asarray(x.addressable_data(0))[0]
    return np.asarray(x)[0]
  return jax.tree.map(first, tree)


def per_device(global_size: int, field: str) -> int:
  """global_size / (global) device count, or a clear error naming the config field."""
  n = device_count()
  if global_size % n:
    valid = ", ".join(str(n * k) for k in range(1, 5))
    where = (f" ({jax.process_count()} processes with {local_device_count()} each)"
             if jax.process_count() > 1 else "")
    raise ValueError(
        f"{field}={global_size} does not divide by the {n} devices in use{where}; "
        f"use a multiple of {n} (e.g. {valid}, ...).")
  return global_size // n


def process_zero_agrees(ok: bool) -> bool:
  """Process 0's ``ok`` on every process, so all stop together when process 0 cannot go on."""
  if jax.process_count() == 1:
    return ok
  return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def gather_int(value: int) -> list[int]:
  """Every process's ``value``, in process order (``[value]`` on a single process)."""
  if jax.process_count() == 1:
    return [value]
  return [int(v) for v in multihost_utils.process_allgather(np.int32(value))]


# --- Joining a multi-process job -------------------------------------------------------
ENV_COORDINATOR = "VAE_JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "VAE_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "VAE_JAX_PROCESS_ID"
ENV_MODE = "VAE_JAX_DISTRIBUTED"  # "auto" or "off"; unset: auto on a Cloud TPU VM only
_EXPLICIT = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)


def _on_cloud_tpu_vm() -> bool:
  """Whether jax found TPU chips and libtpu at import, and may use the TPU backend."""
  from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  platforms = jax.config.jax_platforms
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False)) and (
      not platforms or "tpu" in platforms.split(","))


def _int(name: str) -> int:
  value = os.environ[name]
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} is not an integer.") from None


def initialize() -> None:
  """Joins the multi-process job the environment describes, if any (see the module doc).

  Call it before any other JAX use; calling it again is a no-op.
  """
  if jax.distributed.is_initialized():
    return
  given = [name for name in _EXPLICIT if os.environ.get(name)]
  mode = os.environ.get(ENV_MODE, "").lower()
  if mode not in ("", "auto", "off"):
    raise ValueError(f"{ENV_MODE}={mode!r} is invalid: use 'auto', 'off' or leave it unset.")
  if given:
    missing = [name for name in _EXPLICIT if name not in given]
    if missing:
      raise ValueError(
          f"{', '.join(given)} set but {', '.join(missing)} not: a multi-process run needs "
          f"all three on every process, e.g. {ENV_COORDINATOR}=10.0.0.2:8476 "
          f"{ENV_NUM_PROCESSES}=2 {ENV_PROCESS_ID}=0.")
    address, num, pid = os.environ[ENV_COORDINATOR], _int(ENV_NUM_PROCESSES), _int(
        ENV_PROCESS_ID)
    logging.info("Joining a %d-process job as process %d (coordinator %s).", num, pid, address)
    jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
  elif mode == "off":
    return
  elif mode == "auto" or _on_cloud_tpu_vm():
    logging.info("Joining the multi-process job jax detects (%s).",
                 f"{ENV_MODE}=auto" if mode else "Cloud TPU VM")
    jax.distributed.initialize()
  else:
    return
  logging.info("Process %d of %d; %d local of %d devices.", jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count())
