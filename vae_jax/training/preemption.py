"""Stopping cleanly on SIGTERM, the signal of TPU preemption and most schedulers.

Single process: a SIGTERM handler records the request and the train loop stops
at the end of the current dispatch, saves, and exits. While the loop is only
evaluating an already-saved state, the handler interrupts at once, since
nothing would be lost. Multi-host: hosts must agree on the step to stop at, so
the decision comes from orbax/jax's preemption sync point (its coordination
service hears the signal) and no Python handler is installed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

import jax
from absl import logging


class Preempted(Exception):
  """The run stopped on request after saving its state; rerun to resume."""

  def __init__(self, step: int, saved_step: int):
    super().__init__(
        f"Stopped by SIGTERM at step {step}; checkpoint {saved_step} is saved. "
        f"Rerun the same command to resume.")
    self.step, self.saved_step = step, saved_step


class PreemptionWatcher:
  """Context manager: ``should_stop(step)`` at chunk boundaries; ``interruptible()``."""

  def __init__(self, reached_sync_point: Callable[[int], bool]):
    self._reached_sync_point = reached_sync_point
    self._requested = False
    self._interruptible_at = None  # a saved step while only evaluating, else None
    self._previous = None
    self._installed = False
    self._calls = 0  # multi-host: should_stop calls so far, the sync protocol's counter

  def __enter__(self) -> "PreemptionWatcher":
    if (jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
      self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def _on_sigterm(self, signum, frame) -> None:  # pylint: disable=unused-argument
    self._requested = True
    logging.warning("SIGTERM received: stopping at the next safe point.")
    if self._interruptible_at is not None:
      step = self._interruptible_at
      self._interruptible_at = None
      raise Preempted(step, step)

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after ``step`` (the same answer on every host).

    Multi-host: jax's sync point is the largest counter any host has passed, plus
    one, and only a call with exactly that counter answers True. Steps advance by
    whole dispatches, so they would jump past it; the number of calls (the same
    on every host, which all call here at the same steps) reaches it at the next
    dispatch.
    """
    del step  # every host calls at the same steps; the call count identifies them
    if jax.process_count() > 1:
      self._calls += 1
      return self._reached_sync_point(self._calls)
    return self._requested

  @contextlib.contextmanager
  def interruptible(self, saved_step: int) -> Iterator[None]:
    """Within: the state of ``saved_step`` is saved, so SIGTERM may stop at once."""
    if self._requested:
      raise Preempted(saved_step, saved_step)
    self._interruptible_at = saved_step
    try:
      yield
    finally:
      self._interruptible_at = None
