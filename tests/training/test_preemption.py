"""Stops on SIGTERM and SIGINT: the handler records, safe points act (never the handler)."""

import ctypes
import logging
import os
import signal
import threading
import time

import jax
import numpy as np
import pytest

from tests.conftest import make_config
from vae_jax import models
from vae_jax import parallel
from vae_jax import progress
from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.training import preemption


def _never(step):
  raise AssertionError(f"a single process must not use the multi-host sync point ({step})")


@pytest.fixture(autouse=True)
def _no_request_left_over():
  preemption.reset()
  yield
  preemption.reset()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_only_requests_a_stop_at_the_next_safe_point(signum):
  previous = signal.getsignal(signum)
  with preemption.PreemptionWatcher(_never) as watcher:
    assert not watcher.should_stop(5)
    os.kill(os.getpid(), signum)  # the process survives: the handler only records
    time.sleep(0.01)
    assert preemption.requested() == signal.Signals(signum).name
    assert watcher.should_stop(5)
    preemption.check()  # not abandonable here: nothing raised
    with pytest.raises(preemption.Preempted, match="at step 5; checkpoint 5 is saved"):
      with watcher.interruptible(5):
        pytest.fail("an evaluation must not start after a stop was requested")
  assert signal.getsignal(signum) is previous


def _evaluator_and_params():
  config = make_config()
  model = models.build(config, datasets.info("digits"))
  params = parallel.replicate(model.init(jax.random.PRNGKey(0)))
  test = datasets.load("digits").arrays("test")  # 300 examples: 3 batches of 100
  return evaluation.Evaluator(model, "dynamic", 0, test, 100), params


def test_a_signal_inside_the_evaluation_stops_it_between_batches(monkeypatch):
  """The signal lands while the evaluator reports a batch (in issue 16, inside its device
  callback: a segfault): the handler must not raise there; the evaluation of a saved state
  stops at the next batch boundary instead, and one of an unsaved state runs to the end,
  unchanged."""
  evaluator, params = _evaluator_and_params()
  expected = evaluator.per_example(params, 5)
  update = progress.Progress.update
  def update_and_signal(self, *args, **kwargs):  # the evaluator reports a finished batch
    if preemption.requested() is None:
      os.kill(os.getpid(), signal.SIGTERM)
    return update(self, *args, **kwargs)
  monkeypatch.setattr(progress.Progress, "update", update_and_signal)
  with preemption.PreemptionWatcher(_never) as watcher:
    with pytest.raises(preemption.Preempted, match="by SIGTERM at step 7; checkpoint 7"):
      with watcher.interruptible(7):
        evaluator.per_example(params, 5)
    assert evaluator._progress.done < 3  # pylint: disable=protected-access
    preemption.reset()
    finished = evaluator.per_example(params, 5)  # not abandonable: runs to the end
    assert preemption.requested() == "SIGTERM"
  for key in ("elbo", "log_px"):
    np.testing.assert_array_equal(finished[key], expected[key])


class _BlockedInC:
  """Blocks the calling thread in C until ``release()``, deaf to signals meanwhile.

  As the main thread is inside XLA, compiling a program or waiting for a device
  result: ``pthread_cond_wait`` does not return for a signal, so Python cannot run a
  handler until the wait ends (a ``time.sleep`` or a Python lock would let it run).
  """

  def __init__(self):
    self._libc = ctypes.CDLL(None, use_errno=True)
    # glibc's PTHREAD_MUTEX_INITIALIZER and PTHREAD_COND_INITIALIZER are all zeros.
    self._mutex, self._cond = ctypes.create_string_buffer(128), ctypes.create_string_buffer(128)
    self._done = ctypes.c_int(0)

  def wait(self):
    self._libc.pthread_mutex_lock(self._mutex)
    while not self._done.value:
      self._libc.pthread_cond_wait(self._cond, self._mutex)
    self._libc.pthread_mutex_unlock(self._mutex)

  def release(self):
    self._libc.pthread_mutex_lock(self._mutex)
    self._done.value = 1
    self._libc.pthread_cond_signal(self._cond)
    self._libc.pthread_mutex_unlock(self._mutex)


def _in_a_while(action):
  thread = threading.Thread(target=lambda: (time.sleep(0.3), action()), daemon=True)
  thread.start()
  return thread


def _within(seconds, condition):
  deadline = time.time() + seconds
  while not condition() and time.time() < deadline:
    time.sleep(0.01)
  return condition()


def test_signals_are_heard_while_the_main_thread_is_blocked_in_c(monkeypatch, capfd):
  """Python runs a handler only between bytecodes: a Ctrl-C during a long device call
  was acknowledged, and a second one acted on, only when the call ended (issue 29)."""
  exits = []
  monkeypatch.setattr(os, "_exit", exits.append)  # the second Ctrl-C's abort, recorded
  blocked, heard = _BlockedInC(), {}
  def press_ctrl_c_twice():
    os.kill(os.getpid(), signal.SIGINT)
    heard["first"] = _within(2, lambda: preemption.requested() == "SIGINT")
    os.kill(os.getpid(), signal.SIGINT)
    heard["second"] = _within(2, lambda: exits == [130])
    blocked.release()  # only now may the main thread go on
  with preemption.PreemptionWatcher(_never):
    thread = _in_a_while(press_ctrl_c_twice)
    blocked.wait()
    thread.join()
  assert heard == {"first": True, "second": True}
  err = capfd.readouterr().err
  assert "SIGINT received" in err and "Second Ctrl-C: aborting at once" in err


class _Pending:
  """A device result that is ready once the test says so (an IWAE batch at large k)."""

  def __init__(self):
    self.ready = threading.Event()

  def is_ready(self):
    return self.ready.is_set()


def test_a_stop_leaves_an_abandonable_device_call_running(monkeypatch):
  """In an evaluation of a saved state, a stop need not wait for the batch in hand: the
  time from SIGTERM to exit must not grow with k or the batch size."""
  pending = _Pending()
  with preemption.PreemptionWatcher(_never) as watcher:
    thread = _in_a_while(lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(preemption.Preempted, match="by SIGTERM at step 3"):
      with watcher.interruptible(3):
        preemption.wait({"log_px": pending})
    thread.join()
    assert not pending.is_ready()  # raised while the batch was still running
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(logging, "shutdown", lambda: None)  # pytest's handlers stay open
    preemption.exit_if_abandoned(0)  # the mains end the process now, not at the batch's end
    assert exits == [0]
  preemption.reset()
  preemption.exit_if_abandoned(0)  # nothing left running: an ordinary exit
  assert exits == [0]
  pending.ready.set()
  preemption.wait({"log_px": pending})  # not abandonable: returns once the result is ready


def test_multi_host_runs_stop_where_the_sync_point_says(monkeypatch):
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  previous = signal.getsignal(signal.SIGTERM)
  asked = []
  with preemption.PreemptionWatcher(lambda count: asked.append(count) or count == 2) as watcher:
    # No Python handler: jax's coordination service hears SIGTERM on every host.
    assert signal.getsignal(signal.SIGTERM) is previous
    assert [watcher.should_stop(s) for s in (20, 40)] == [False, True]
  # jax's sync point is a counter one past the largest any host reported, so it is
  # given the number of calls (consecutive), not the steps (which jump by dispatches).
  assert asked == [1, 2]
