"""Stopping cleanly on SIGTERM (preemption, schedulers) and SIGINT (Ctrl-C).

The signal handler only records the request. It must never raise: Python runs
it wherever the main thread happens to be, which during an evaluation is inside
an XLA host callback (the evaluator's progress report), and an exception there
crashed the process (a segmentation fault after the checkpoint was saved). The
request is acted on at safe points, in ordinary code:

- the train loop, after each dispatch: it saves the state and raises ``Preempted``;
- ``check()``, between evaluation batches and between pictures: it raises only
  inside ``abandonable(...)``, i.e. while the work in hand may be dropped because
  nothing would be lost (an evaluation of a state already saved, a read-only
  command such as ``experiments.evaluate``).

A second Ctrl-C aborts at once (exit 130), saying so, for a user who will not
wait for the safe point; what is already saved stays. Multi-host: hosts must agree
on the step to stop at, so the decision comes from orbax/jax's preemption sync
point (its coordination service hears SIGTERM) and evaluations are never
abandoned (every host must run the same collectives).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Callable, Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _one_process() -> bool:
  # JAX is imported here, not above: the mains install the handlers before the
  # seconds-long imports, so that a signal during start-up is caught too.
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count() == 1


class Stopped(Exception):
  """The command stopped on request at a safe point; what it had saved is intact."""


class Preempted(Stopped):
  """The run stopped on request after saving its state; rerun to resume."""

  def __init__(self, step: int, saved_step: Optional[int], by: Optional[str] = None):
    by = by or requested() or "request"
    saved = (f"checkpoint {saved_step} is saved" if saved_step is not None else
             "no checkpoint was saved yet (the rerun starts afresh)")
    super().__init__(f"Stopped by {by} at step {step}; {saved}. "
                     f"Rerun the same command to resume.")
    self.step, self.saved_step = step, saved_step


class _State:
  requested: Optional[str] = None      # the first signal's name, once one came
  abandon: Optional[Callable[[], Stopped]] = None  # inside abandonable(): what check() raises
  previous: dict[int, object] = {}     # handlers install() replaced, for uninstall()


def _on_signal(signum, frame) -> None:  # pylint: disable=unused-argument
  name = signal.Signals(signum).name
  if _State.requested == "SIGINT" and name == "SIGINT":
    # os.write: no locks (the handler may interrupt a logging call holding one).
    os.write(2, b"\nSecond Ctrl-C: aborting at once. Checkpoints already saved are intact; "
                b"rerun the same command to resume from the latest.\n")
    os._exit(130)  # pylint: disable=protected-access
  if _State.requested is None:
    _State.requested = name
    again = " Press Ctrl-C again to abort at once." if name == "SIGINT" else ""
    os.write(2, f"\n{name} received: stopping at the next safe point (saving what is unsaved).{again}\n"
             .encode())


def install() -> bool:
  """Installs the flag-setting handlers for SIGTERM and SIGINT; returns whether it did.

  Only the main thread of a process can (Python's rule); idempotent.
  """
  if threading.current_thread() is not threading.main_thread():
    return False
  for signum in SIGNALS:
    current = signal.getsignal(signum)
    if current is not _on_signal:
      _State.previous[signum] = current
      signal.signal(signum, _on_signal)
  return True


def uninstall() -> None:
  """Restores the handlers ``install`` replaced (tests, notebooks)."""
  for signum, previous in list(_State.previous.items()):
    signal.signal(signum, previous)
    del _State.previous[signum]


def requested() -> Optional[str]:
  """The name of the signal that asked this process to stop, or None."""
  return _State.requested


def reset() -> None:
  """Forgets a request (a notebook continuing after a stop; tests)."""
  _State.requested = None


@contextlib.contextmanager
def abandonable(stopped: Callable[[], Stopped]) -> Iterator[None]:
  """Within: nothing is lost if the work stops, so ``check()`` raises ``stopped()``.

  Single process only: on several hosts every one must run the same collectives.
  """
  if not _one_process():
    yield
    return
  outer, _State.abandon = _State.abandon, stopped
  try:
    check()
    yield
  finally:
    _State.abandon = outer


def check() -> None:
  """A safe point: raises if a stop was requested while the work is abandonable."""
  if _State.requested is not None and _State.abandon is not None:
    raise _State.abandon()


def read_only_command(what: str) -> contextlib.AbstractContextManager:
  """``abandonable`` for a command that saves nothing (evaluate, pictures)."""
  return abandonable(lambda: Stopped(
      f"Stopped by {requested()} before {what} finished; nothing was written. Rerun the "
      f"same command to do it."))


class PreemptionWatcher:
  """Context manager for the train loop: ``should_stop(step)`` at chunk boundaries."""

  def __init__(self, reached_sync_point: Callable[[int], bool]):
    self._reached_sync_point = reached_sync_point
    self._installed = False
    self._calls = 0  # multi-host: should_stop calls so far, the sync protocol's counter

  def __enter__(self) -> "PreemptionWatcher":
    # The command-line mains install the handlers first thing; a run started from
    # Python (tests, notebooks) gets them here, for the loop's duration.
    if _one_process() and signal.getsignal(signal.SIGTERM) is not _on_signal:
      self._installed = install()
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      uninstall()
      self._installed = False

  def should_stop(self, step: int) -> bool:
    """Whether to save and stop after ``step`` (the same answer on every host).

    Multi-host: jax's sync point is the largest counter any host has passed, plus
    one, and only a call with exactly that counter answers True. Steps advance by
    whole dispatches, so they would jump past it; the number of calls (the same
    on every host, which all call here at the same steps) reaches it at the next
    dispatch.
    """
    del step  # every host calls at the same steps; the call count identifies them
    if not _one_process():
      self._calls += 1
      return self._reached_sync_point(self._calls)
    return _State.requested is not None

  def interruptible(self, saved_step: int) -> contextlib.AbstractContextManager:
    """Within: the state of ``saved_step`` is saved, so a stop may drop the work in hand."""
    return abandonable(lambda: Preempted(saved_step, saved_step))

