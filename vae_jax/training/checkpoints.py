"""Checkpoints of the whole train state with orbax's CheckpointManager.

A checkpoint holds two items: "state" (params, optimizer state, step, base rng)
and "meta" (JSON: the data position, run counters and a SHA-256 of the state's
bytes). The data position and every random draw derive from (rng, step), so
the state alone determines the rest of the run.

Saves are asynchronous: orbax writes into a temporary directory, renames it
when complete and only then removes checkpoints that fell out of the keep
policy (the last ``keep``, plus the best on validation if asked: scored by the
loop with the run's selection metric, lower is better; see selection.py). A checkpoint
that fails to restore, or whose bytes no longer match its digest (a flipped
byte in an array file restores "fine" otherwise), is moved to
``workdir/damaged_checkpoints``, never deleted, and the previous one is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging as py_logging
import os
import shutil
import time
from typing import Any, Iterator, Optional

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from vae_jax.training import write_errors

DAMAGED_DIR = "damaged_checkpoints"
BEST_METRIC = "validation"  # the selection score, lower is better
LEGACY_METRIC = "neg_elbo"    # what runs before validation splits recorded (test -ELBO)


def _score(metrics: dict[str, float]) -> float:
  return metrics[BEST_METRIC] if BEST_METRIC in metrics else metrics[LEGACY_METRIC]


class CheckpointError(RuntimeError):
  """No checkpoint of the run can be restored."""


class _OrbaxInfoFilter(py_logging.Filter):
  """Drops orbax's per-save INFO lines (dozens per checkpoint); keeps its warnings."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    return record.levelno >= py_logging.WARNING or "/orbax/" not in record.pathname


def _quiet_orbax() -> None:
  logger = py_logging.getLogger("absl")
  if not any(isinstance(f, _OrbaxInfoFilter) for f in logger.filters):
    logger.addFilter(_OrbaxInfoFilter())


def state_digest(state: Any) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(state):
    array = np.asarray(jax.device_get(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
  return digest.hexdigest()


@flax.struct.dataclass
class _StateBeforeAux:
  """The train state's layout in checkpoints saved before ``TrainState.aux`` existed."""
  step: Any
  params: Any
  opt_state: Any
  rng: Any


class Checkpointer:
  """Periodic saves into ``workdir/checkpoints`` with a fallback past damaged ones."""

  def __init__(self, workdir: str, keep: int, keep_best: bool = False,
               read_only: bool = False):
    """``read_only``: for evaluators of another process's run; never writes or moves."""
    _quiet_orbax()
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.keep_best = keep_best
    policies = [ocp.checkpoint_managers.LatestN(n=keep)]
    if keep_best:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=_score, reverse=True, n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        create=not read_only, read_only=read_only, enable_async_checkpointing=not read_only,
        cleanup_tmp_directories=not read_only,  # leftovers of saves killed midway
        preservation_policy=None if read_only else
        ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=_score if keep_best else None, best_mode="min")
    self._read_only = read_only
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> list[int]:
    if self._read_only:  # another process may be writing: look at the disk again
      self._manager.reload()
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def best_step(self) -> Optional[int]:
    """The step with the lowest validation score (the latest if none was scored)."""
    return self._manager.best_step()

  def wait_until_finished(self) -> None:
    """Returns when pending asynchronous saves are on disk (e.g. before best_step)."""
    with self._write_errors():
      self._manager.wait_until_finished()

  def save(self, step: int, state: Any, meta: dict[str, Any],
           score: Optional[float] = None) -> None:
    """Saves a host-side (unreplicated) state; returns while orbax writes.

    ``score``: the validation figure keep_best ranks checkpoints by (lower is better).
    """
    meta = dict(meta, step=step, state_sha256=state_digest(state))
    metrics = None if score is None else {BEST_METRIC: float(score)}
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              meta=ocp.args.JsonSave(meta))
    with self._write_errors():  # also reports a failure of the previous, async save
      saved = self._manager.save(step, args=args, metrics=metrics)
    if not saved:
      raise CheckpointError(f"orbax declined to save step {step} in {self.directory} "
                            f"(existing steps: {self.all_steps()}).")

  @contextlib.contextmanager
  def _write_errors(self) -> Iterator[None]:
    """A failed write (disk full, I/O error) -> CheckpointError saying what is safe."""
    try:
      yield
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      complete = sorted(int(d) for d in os.listdir(self.directory) if d.isdigit())
      raise CheckpointError(
          f"Writing a checkpoint in {self.directory} failed ({write_errors.brief(e)}; "
          f"{write_errors.free_mib(self.directory)}). Complete "
          f"checkpoints are untouched: "
          f"{complete}. Fix the cause (e.g. free disk space) and rerun the same command "
          f"to resume.") from e

  def restore(self, step: int, template: Any) -> tuple[Any, dict[str, Any]]:
    """(state, meta) saved at ``step``, shaped like ``template``; checks the digest."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    logging.info("Restoring checkpoint %d from %s", step, self.directory)
    try:
      restored = self._restore(step, abstract)
      state = restored["state"]
    except ValueError as e:
      # Checkpoints saved before ``TrainState.aux`` existed lack it; a state without an
      # auxiliary network (an empty ``aux``) restores from them as it did then.
      if "aux" not in str(e) or jax.tree.leaves(getattr(template, "aux", None)):
        raise
      restored = self._restore(step, _StateBeforeAux(
          abstract.step, abstract.params, abstract.opt_state, abstract.rng))
      old = restored["state"]
      state = template.replace(step=old.step, params=old.params, opt_state=old.opt_state,
                               rng=old.rng)
    meta = dict(restored["meta"])
    if meta.get("step") != step or meta.get("state_sha256") != state_digest(state):
      raise CheckpointError(f"checkpoint {step}: its bytes do not match the SHA-256 "
                            f"recorded when it was saved")
    return state, meta

  def _restore(self, step: int, abstract: Any) -> dict[str, Any]:
    return self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))

  def restore_latest(self, template: Any) -> Optional[tuple[Any, dict[str, Any]]]:
    """The newest checkpoint that restores intact, or None if there are none.

    Damaged newer ones are named in a warning and (unless read-only) moved aside.
    If no checkpoint restores, raises: the run must not silently start over.
    """
    failures, denied = [], []
    for step in reversed(self.all_steps()):
      try:
        restored = self.restore(step, template)
      except Exception as e:  # pylint: disable=broad-except  # any failure = unusable
        failures.append((step, write_errors.brief(e)))
        denied.append(isinstance(e, PermissionError))
        continue
      for bad_step, reason in failures:
        self._set_aside(bad_step, reason)
      return restored
    if failures and all(denied):  # not damaged: this user may not read them
      raise CheckpointError(
          f"The checkpoints in {self.directory} cannot be read by this user (permission "
          f"denied on steps {', '.join(str(s) for s, _ in failures)}); fix their "
          f"permissions (or run as their owner) and rerun; nothing was moved.")
    if failures:
      raise CheckpointError(
          f"No checkpoint in {self.directory} can be restored: " +
          "; ".join(f"step {s}: {r}" for s, r in failures) +
          ". If the model or code changed, use a new --workdir; nothing was moved.")
    return None

  def _set_aside(self, step: int, reason: str) -> None:
    path = os.path.join(self.directory, str(step))
    if self._read_only or jax.process_index() != 0:
      logging.warning("Checkpoint %s is damaged (%s); using an older one.", path, reason)
      return
    target = os.path.join(self.workdir, DAMAGED_DIR, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(path, target)
    self._manager.reload()
    logging.warning("Checkpoint %s is damaged (%s). Moved it to %s (not deleted) and "
                    "resuming from an older checkpoint.", path, reason, target)

  def reached_preemption(self, step: int) -> bool:
    """Multi-host: whether all hosts agreed to stop at ``step`` (jax's preemption sync)."""
    return self._manager.reached_preemption(step)

  def close(self) -> None:
    """Waits for pending saves to finish, then releases the manager."""
    with self._write_errors():
      self._manager.wait_until_finished()
    self._manager.close()
