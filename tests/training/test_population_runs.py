"""Populations end to end: each member ends as its solo run, on 1 and 4 devices; a
population killed and rerun is bitwise exact; a frozen member stays frozen on resume."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import (REPO, SMALL, assert_trees_equal, concurrently, make_config,
                            saved_state)
from vae_jax.training import loop as train
from vae_jax.training import members as members_lib
from vae_jax.training import preemption

pytestmark = pytest.mark.slow

RUN = {**SMALL, "num_train_steps": 30, "eval_every": 10, "checkpoint_every": 10,
       "images.num_reconstructions": 4, "images.num_samples": 4}
# beta, seed and latent-dimension members mixed in one population.
MEMBERS = [{"objective.beta": 1.0, "seed": 0, "model.latent_dim": 4},
           {"objective.beta": 2.0, "seed": 1, "model.latent_dim": 4},
           {"objective.beta": 0.5, "seed": 0, "model.latent_dim": 2},
           {"objective.beta": 4.0, "seed": 2, "model.latent_dim": 2}]
FIGURES = ("neg_elbo", "rate", "distortion", "nll", "mutual_information")


def _config(member):
  return make_config(**{k.replace(".", "__"): v for k, v in {**RUN, **member}.items()})


def _results(workdir):
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    return json.load(f)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Each member's solo run and the population's, in this process, on one device."""
  root = tmp_path_factory.mktemp("runs")
  for i, member in enumerate(MEMBERS):
    train.train_and_evaluate(_config(member), str(root / f"solo{i}"))
  outcomes = train.train_population([_config(m) for m in MEMBERS],
                                    [str(root / "population" / f"m{i}")
                                     for i in range(len(MEMBERS))])
  assert all(isinstance(o, dict) for o in outcomes), outcomes
  return root


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
  """The population on 4 devices, split by members and by batch (both runs at once)."""
  root = tmp_path_factory.mktemp("four_devices")
  procs = concurrently(lambda split: _run_population(4, root / split, POPULATION_SPLIT=split),
                       ("members", "batch"))
  for proc in procs:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return root


def _run_population(num_devices, workdir, **env):
  return subprocess.run(
      [sys.executable, os.path.join(REPO, "tests", "run_with_devices.py"), str(num_devices),
       str(workdir), json.dumps(RUN)], capture_output=True, text=True, cwd=REPO, timeout=600,
      env={**os.environ, "POPULATION": json.dumps(MEMBERS), **env})


def test_each_member_ends_as_its_solo_run(runs):
  for i, member in enumerate(MEMBERS):
    solo, pop = _results(runs / f"solo{i}"), _results(runs / "population" / f"m{i}")
    assert pop["steps"] == solo["steps"] == 30
    for key in FIGURES:  # float rounding only: a batched program sums in another order
      assert abs(pop["test"][key] - solo["test"][key]) < 1e-4 * max(1, abs(solo["test"][key]))
    assert pop["test"]["active_units"] == solo["test"]["active_units"]
    assert len(pop["test"]["activity_per_dim"]) == member["model.latent_dim"]
    config = _config(member)
    solo_state, init = saved_state(runs / f"solo{i}", config)
    pop_state, _ = saved_state(runs / "population" / f"m{i}", config)
    # The padded member's checkpoint is its slice, at its own size.
    assert jax.tree.map(np.shape, pop_state) == jax.tree.map(np.shape, solo_state)
    moved = max(jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)),
                                             solo_state.params, init.params)))
    diff = max(jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)),
                                            solo_state.params, pop_state.params)))
    assert moved > 1e-2 and diff < 1e-5
    for name in ("config.json", "metrics.jsonl", "samples.png", "reconstructions.png"):
      assert (runs / "population" / f"m{i}" / name).exists()


@pytest.mark.parametrize("split", ["members", "batch"])
def test_the_population_is_the_same_on_four_devices(runs, four_devices, split):
  """Whole members on each device, or a slice of every member's batch on each."""
  for i in range(len(MEMBERS)):
    one, four = (_results(runs / "population" / f"m{i}"),
                 _results(four_devices / split / f"m{i}"))
    assert four["device_count"] == 4
    for key in FIGURES:
      assert abs(one["test"][key] - four["test"][key]) < 1e-4 * max(1, abs(one["test"][key]))
    config = _config(MEMBERS[i])
    diff = jax.tree.map(lambda a, b: np.max(np.abs(a - b)),
                        saved_state(runs / "population" / f"m{i}", config)[0].params,
                        saved_state(four_devices / split / f"m{i}", config)[0].params)
    assert max(jax.tree.leaves(diff)) < 1e-5


def test_a_killed_population_resumes_bitwise(runs, tmp_path):
  # Killed after the last dispatch, before its saves; step 20's may be mid-write, but
  # orbax starts a save only once the one before is on disk: step 10's is complete.
  killed = _run_population(1, tmp_path, KILL_AT_STEP="30")
  assert killed.returncode == -9, killed.stderr[-3000:]
  for i in range(len(MEMBERS)):
    assert not (tmp_path / f"m{i}" / "results.json").exists()
    assert 10 in [int(d) for d in os.listdir(tmp_path / f"m{i}" / "checkpoints") if d.isdigit()]
  rerun = _run_population(1, tmp_path)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  for i, member in enumerate(MEMBERS):
    config = _config(member)
    expected, _ = saved_state(runs / "population" / f"m{i}", config)
    state, _ = saved_state(tmp_path / f"m{i}", config)
    assert int(state.step) == 30
    assert_trees_equal(state, expected)
    assert (_results(tmp_path / f"m{i}")["test"]["neg_elbo"] ==
            _results(runs / "population" / f"m{i}")["test"]["neg_elbo"])


def test_a_frozen_member_stays_frozen_through_a_resume(tmp_path, monkeypatch):
  """Member 1's validation never improves: with patience 1 it stops at its second
  evaluation (step 20) while member 0 goes on; a stop at step 20 and a rerun keep it so."""
  record = members_lib.Member.record_validation

  def fake(self, step, summary):  # member 0 always improves, member 1 never does
    return record(self, step, dict(summary, neg_elbo=-step if self.index == 0 else 1.0))
  monkeypatch.setattr(members_lib.Member, "record_validation", fake)
  configs = [_config({"seed": s, "selection.patience": 1}) for s in (0, 1)]
  workdirs = [str(tmp_path / f"m{i}") for i in range(2)]
  should_stop = preemption.PreemptionWatcher.should_stop
  monkeypatch.setattr(preemption.PreemptionWatcher, "should_stop",
                      lambda self, step: step >= 20 or should_stop(self, step))
  with pytest.raises(preemption.Preempted):
    train.train_population(configs, workdirs)
  frozen, _ = saved_state(workdirs[1], configs[1])
  assert int(frozen.step) == 20
  monkeypatch.setattr(preemption.PreemptionWatcher, "should_stop", should_stop)
  outcomes = train.train_population(configs, workdirs)
  assert [o["steps"] for o in outcomes] == [30, 20]
  assert outcomes[1]["selection"]["stopped_early"] and not outcomes[0]["selection"][
      "stopped_early"]
  assert sorted(int(d) for d in os.listdir(os.path.join(workdirs[1], "checkpoints"))
                if d.isdigit())[-1] == 20
  again, _ = saved_state(workdirs[1], configs[1])
  assert_trees_equal(again.params, frozen.params)


def test_a_stop_during_validation_drops_it_and_the_rerun_is_exact(runs, tmp_path, monkeypatch):
  """A stop asked during the validation of an unsaved state (step 20) does not wait for it:
  the run exits with checkpoint 10, and the rerun redoes steps 10..20 exactly."""
  from vae_jax.training import run as run_lib  # pylint: disable=g-import-not-at-top
  evaluate = run_lib.Run.evaluate

  def stop_at_20(self, split, *args, **kwargs):
    if split == "validation" and self.step == 20:
      monkeypatch.setattr(preemption._State, "requested", "SIGTERM")  # pylint: disable=protected-access
    return evaluate(self, split, *args, **kwargs)
  monkeypatch.setattr(run_lib.Run, "evaluate", stop_at_20)
  configs = [_config(m) for m in MEMBERS]
  workdirs = [str(tmp_path / f"m{i}") for i in range(len(MEMBERS))]
  with pytest.raises(preemption.Preempted, match="at step 20; checkpoint 10 is saved"):
    train.train_population(configs, workdirs)
  assert all(not os.path.exists(os.path.join(w, "checkpoints", "20")) for w in workdirs)
  monkeypatch.undo()
  preemption.reset()
  train.train_population(configs, workdirs)
  for i, config in enumerate(configs):
    expected, _ = saved_state(runs / "population" / f"m{i}", config)
    assert_trees_equal(saved_state(workdirs[i], config)[0], expected)
