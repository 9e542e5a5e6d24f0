"""PreemptionWatcher: SIGTERM asks for a stop; saved evaluations are interrupted at once."""

import os
import signal
import time

import jax
import pytest

from vae_jax.training import preemption


def _never(step):
  raise AssertionError(f"a single process must not use the multi-host sync point ({step})")


def test_sigterm_requests_a_stop_at_the_next_safe_point():
  previous = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionWatcher(_never) as watcher:
    assert not watcher.should_stop(5)
    os.kill(os.getpid(), signal.SIGTERM)  # the process survives: the handler only records
    time.sleep(0.01)
    assert watcher.should_stop(5)
    with pytest.raises(preemption.Preempted, match="at step 5; checkpoint 5 is saved"):
      with watcher.interruptible(5):
        pytest.fail("an evaluation must not start after a stop was requested")
  assert signal.getsignal(signal.SIGTERM) is previous


def test_sigterm_interrupts_the_evaluation_of_a_saved_state_at_once():
  with preemption.PreemptionWatcher(_never) as watcher:
    start = time.time()
    with pytest.raises(preemption.Preempted, match="checkpoint 7 is saved"):
      with watcher.interruptible(7):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # a long evaluation
    assert time.time() - start < 5


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
