"""Joining a multi-process JAX job: a Cloud TPU pod slice, or processes named explicitly.

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

import jax
from absl import logging

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
