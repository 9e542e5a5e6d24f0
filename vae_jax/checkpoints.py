"""Checkpoints of the whole train state with orbax's CheckpointManager.

The state (params, optimizer state, step, base rng) is saved from device 0's
copy; the data position and every random draw derive from (rng, step), so the
state alone determines the rest of the run. Saves are asynchronous: training
continues while orbax writes, and a save is only visible once complete.
"""

from __future__ import annotations

import logging as py_logging
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging


class _OrbaxInfoFilter(py_logging.Filter):
  """Drops orbax's per-save INFO lines (dozens per checkpoint); keeps its warnings."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def _quiet_orbax() -> None:
  logger = py_logging.getLogger("absl")
  if not any(isinstance(f, _OrbaxInfoFilter) for f in logger.filters):
    logger.addFilter(_OrbaxInfoFilter())


class Checkpointer:
  """Periodic saves into ``workdir/checkpoints``, keeping the last ``keep``."""

  def __init__(self, workdir: str, keep: int, read_only: bool = False):
    """``read_only``: for evaluators of another process's run; never writes or deletes."""
    _quiet_orbax()
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=not read_only,
                                           enable_async_checkpointing=not read_only,
                                           read_only=read_only)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def save(self, step: int, state: Any) -> None:
    """Saves a host-side (unreplicated) state; returns while orbax writes."""
    self._manager.save(step, args=ocp.args.StandardSave(state))

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps(read=True))

  def restore(self, step: int, template: Any) -> Any:
    """The state saved at ``step``, shaped like ``template``."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    logging.info("Restoring checkpoint %d from %s", step, self.directory)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_latest(self, template: Any) -> Optional[Any]:
    """The latest saved state shaped like ``template``, or None if there is none."""
    step = self._manager.latest_step()
    return None if step is None else self.restore(step, template)

  def close(self) -> None:
    """Waits for pending saves to finish, then releases the manager."""
    self._manager.wait_until_finished()
    self._manager.close()
