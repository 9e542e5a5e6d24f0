"""Stops on SIGTERM and SIGINT: the handler records, safe points act (never the handler)."""

import os
import signal
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
  """The signal lands while the evaluator's device callback runs (the issue's segfault):
  the handler must not raise there; the evaluation of a saved state stops at the next
  batch boundary instead, and one of an unsaved state runs to the end, unchanged."""
  evaluator, params = _evaluator_and_params()
  expected = evaluator.per_example(params, 5)
  update = progress.Progress.update
  def update_and_signal(self, *args, **kwargs):  # runs in the evaluator's device callback
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
