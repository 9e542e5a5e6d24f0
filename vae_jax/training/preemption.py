"""Stopping cleanly on SIGTERM (preemption, schedulers) and SIGINT (Ctrl-C).

The signal handler only records the request, and says so on the terminal at once:
Python runs a handler only between bytecodes, so while the main thread waits inside
XLA (compiling, or for a device result) a thread of its own hears the signal through
the wake-up fd (``_on_signal``). The handler must never raise: Python runs it
wherever the main thread happens to be, which was once inside an XLA host callback
(an exception there crashed the process after the checkpoint was saved). The
request is acted on at safe points, in ordinary code:

- the train loop, after each dispatch: it saves the state and raises ``Preempted``;
- ``check()``, between evaluation batches and between pictures: it raises only
  inside ``abandonable(...)``, i.e. while the work in hand may be dropped because
  nothing would be lost (an evaluation of a state already saved, a read-only
  command such as ``experiments.evaluate``);
- ``wait(arrays)``, while the device computes an evaluation batch (an IWAE batch at
  large k runs for minutes): it polls for the result instead of blocking, so an
  abandonable batch is dropped at once, left running; ``exit_if_abandoned`` then
  ends the process without the runtime's wait for it at exit.

A second Ctrl-C aborts at once (exit 130), saying so, for a user who will not
wait for the safe point; what is already saved stays. Multi-host: hosts must agree
on the step to stop at, so the decision comes from orbax/jax's preemption sync
point (its coordination service hears SIGTERM) and evaluations are never
abandoned (every host must run the same collectives).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT)
POLL_S = 0.05  # how often wait() lets handlers run and looks at the device's results


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
  left_running: bool = False           # a stop abandoned device work still in flight
  listener: Optional[tuple[int, threading.Thread]] = None  # (the wake-up pipe's write end,
                                                           # the thread reading it)
  lock = threading.RLock()             # one signal heard at a time


def _hear(signum: int) -> None:
  """Records a stop request and says so; a second Ctrl-C aborts the process."""
  name = signal.Signals(signum).name
  with _State.lock:
    if _State.requested == "SIGINT" and name == "SIGINT":
      # os.write: no locks (the handler may interrupt a logging call holding one).
      os.write(2, b"\nSecond Ctrl-C: aborting at once. Checkpoints already saved are intact; "
                  b"rerun the same command to resume from the latest.\n")
      os._exit(130)  # pylint: disable=protected-access
    if _State.requested is None:
      _State.requested = name
      again = " Press Ctrl-C again to abort at once." if name == "SIGINT" else ""
      os.write(2, f"\n{name} received: stopping at the next safe point (saving what is "
                  f"unsaved).{again}\n".encode())


def _on_signal(signum, frame) -> None:  # pylint: disable=unused-argument
  # Python runs this in the main thread between bytecodes: not while the main thread
  # is blocked in a long C call (XLA compiling a program, or waiting for a device
  # result). The listener thread hears the signal at once instead, through the
  # wake-up fd the C-level handler writes to; this handler acts only without it.
  if _State.listener is None:
    _hear(signum)


def _listen(read_fd: int) -> None:
  with os.fdopen(read_fd, "rb", buffering=0) as pipe:
    while True:
      try:
        data = pipe.read(64)
      except OSError:
        return
      if not data:  # uninstall() closed the write end
        return
      for signum in data:
        if signum in SIGNALS:
          _hear(signum)


def _start_listener() -> None:
  """Hears SIGTERM and SIGINT in a thread of their own (main thread only, once).

  Left out where the wake-up fd is someone else's (an asyncio loop with signal
  handlers): the handler then acts alone, as before.
  """
  if _State.listener is not None:
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  if previous != -1:
    signal.set_wakeup_fd(previous, warn_on_full_buffer=False)
    os.close(read_fd)
    os.close(write_fd)
    return
  thread = threading.Thread(target=_listen, args=(read_fd,), name="vae_jax signals",
                            daemon=True)
  thread.start()
  _State.listener = (write_fd, thread)


def _stop_listener() -> None:
  if _State.listener is None:
    return
  write_fd, thread = _State.listener
  current = signal.set_wakeup_fd(-1)
  if current != write_fd:  # someone replaced ours meanwhile: theirs stays
    signal.set_wakeup_fd(current, warn_on_full_buffer=False)
  _State.listener = None
  os.close(write_fd)  # the thread reads the end of the pipe and returns
  thread.join(timeout=1.0)


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
  _start_listener()
  return True


def uninstall() -> None:
  """Restores the handlers ``install`` replaced (tests, notebooks)."""
  _stop_listener()
  for signum, previous in list(_State.previous.items()):
    signal.signal(signum, previous)
    del _State.previous[signum]


def requested() -> Optional[str]:
  """The name of the signal that asked this process to stop, or None."""
  return _State.requested


def reset() -> None:
  """Forgets a request (a notebook continuing after a stop; tests)."""
  _State.requested = None
  _State.left_running = False


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


def wait(tree: Any) -> None:
  """Returns once every array in ``tree`` is computed; a safe point meanwhile.

  Polls ``is_ready()`` between short sleeps instead of blocking in the runtime, so
  that signal handlers run within ``POLL_S`` (see the module docstring). In an
  abandonable phase a stop raises here at once, leaving the device work running.
  """
  pending = [x for x in _leaves(tree) if hasattr(x, "is_ready")]
  while pending:
    try:
      check()
    except Stopped:
      _State.left_running = True
      raise
    pending = [x for x in pending if not x.is_ready()]
    if pending:
      time.sleep(POLL_S)


def _leaves(tree: Any) -> list:
  import jax  # pylint: disable=g-import-not-at-top  # see _one_process
  return jax.tree.leaves(tree)


def exit_if_abandoned(status: int = 0) -> None:
  """Ends the process now if a stop left device work running (after flushing the logs).

  At a normal exit the runtime waits for every computation in flight, which at
  large k is the rest of a long batch: the bound on the time from a signal to an
  exited process would be the batch's length. Nothing is lost: work is abandoned
  only where its state is saved (``abandonable``), and the caller has unwound,
  closing checkpoints and files, before it calls this.
  """
  if not _State.left_running:
    return
  logging.shutdown()  # flushes every handler: the terminal and WORKDIR/COMMAND.log
  for stream in (sys.stdout, sys.stderr):
    with contextlib.suppress(Exception):
      stream.flush()
  os._exit(status)  # pylint: disable=protected-access


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

