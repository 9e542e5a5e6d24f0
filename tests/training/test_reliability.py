"""Runs that survive: SIGKILL, SIGTERM, NaNs, a busy workdir, bad overrides, reruns.

Every fault is provoked for real: the training command runs in a subprocess
that is killed or signalled while it trains, and the resumed run must end with
parameters bitwise identical to an uninterrupted one.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.conftest import (REPO, SMALL, assert_trees_equal, concurrently, make_config,
                            saved_state)
from vae_jax.training import metrics
from vae_jax.training import loop as train
from vae_jax.training import step as training
from vae_jax.training import workdir as workdir_lib

# Training subprocesses, killed and resumed, and whole runs: the full suite only.
pytestmark = pytest.mark.slow

# 400 steps of 5-step dispatches, a checkpoint every 10: long enough (a few
# seconds, mostly saving) to be killed at random points, including mid-save.
RUN = {**SMALL, "num_train_steps": 400, "steps_per_dispatch": 5, "log_every": 10,
       "checkpoint_every": 10, "eval_every": 400, "keep_checkpoints": 2,
       "eval.num_importance_samples": 5, "images.num_reconstructions": 0,
       "images.num_samples": 0}


def _command(workdir, fields):
  args = [sys.executable, "-m", "experiments.train", "--config=configs/default.py",
          f"--workdir={workdir}"]
  return args + [f"--config.{k}={v}" for k, v in fields.items()]


def _start(workdir, fields):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen(_command(workdir, fields), cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run(workdir, fields, timeout=300):
  proc = _start(workdir, fields)
  out, _ = proc.communicate(timeout=timeout)
  return proc.returncode, out


def _latest_checkpoint(workdir):
  try:
    steps = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  except FileNotFoundError:
    return -1
  return max(steps, default=-1)


def _wait_for(predicate, proc, timeout=120):
  deadline = time.time() + timeout
  while not predicate():
    assert proc.poll() is None, "the run ended before it could be interrupted"
    assert time.time() < deadline, "the run made no progress"
    time.sleep(0.002)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run (in this process): its config and final state."""
  config = make_config(**{k.replace(".", "__"): v for k, v in RUN.items()})
  workdir = tmp_path_factory.mktemp("reference")
  train.train_and_evaluate(config, str(workdir))
  return config, saved_state(workdir, config)[0]


def test_sigkill_at_random_moments_then_resume_is_bitwise_exact(tmp_path, reference):
  config, expected = reference
  workdir = str(tmp_path / "run")
  rng = random.Random(1234)  # the kill points are random but reproducible
  targets = sorted(rng.sample(range(20, 340, 10), 3))
  for target in targets:
    proc = _start(workdir, RUN)
    _wait_for(lambda t=target: _latest_checkpoint(workdir) >= t, proc)
    time.sleep(rng.uniform(0, 0.05))  # anywhere: mid-chunk, mid-save, between
    proc.kill()
    proc.wait()
    assert not os.path.exists(os.path.join(workdir, "results.json"))
  code, out = _run(workdir, RUN)
  assert code == 0, out[-3000:]
  assert "Resumed from checkpoint" in out
  state, _ = saved_state(workdir, config)
  assert int(state.step) == 400
  assert_trees_equal(state, expected)
  # metrics.jsonl stays parseable after the kills (a torn last line is dropped).
  assert max(metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))) == 400


def test_sigterm_saves_and_exits_cleanly_then_resumes_exactly(tmp_path, reference):
  config, expected = reference
  fields = {**RUN, "checkpoint_every": 1000}  # only the final step would be saved
  workdir = str(tmp_path / "run")
  proc = _start(workdir, fields)
  metrics_file = os.path.join(workdir, "metrics.jsonl")
  _wait_for(lambda: os.path.exists(metrics_file) and os.path.getsize(metrics_file) > 0, proc)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out[-3000:]
  assert "SIGTERM received" in out
  stopped = _latest_checkpoint(workdir)
  assert 0 < stopped < 400 and stopped % 5 == 0  # the end of the dispatch it was in
  assert f"Stopped by SIGTERM at step {stopped}; checkpoint {stopped} is saved" in out
  assert not os.path.exists(os.path.join(workdir, "results.json"))
  code, out = _run(workdir, fields)
  assert code == 0, out[-3000:]
  assert f"Resumed from checkpoint {stopped}" in out
  assert_trees_equal(saved_state(workdir, config)[0], expected)


def test_second_run_on_a_busy_workdir_is_refused_until_the_first_dies(tmp_path):
  workdir = str(tmp_path / "run")
  fields = {**RUN, "num_train_steps": 10**7}
  holder = _start(workdir, fields)
  try:
    _wait_for(lambda: _latest_checkpoint(workdir) >= 10, holder)
    config = make_config(**{k.replace(".", "__"): v for k, v in fields.items()})
    with pytest.raises(workdir_lib.WorkdirError, match=f"in use by another run \\(pid "
                                                       f"{holder.pid} "):
      train.train_and_evaluate(config, workdir)
    assert holder.poll() is None  # the running job is untouched
  finally:
    holder.kill()
    holder.wait()
  with workdir_lib.lock(workdir):  # released by the kernel when the holder died
    pass


def test_nan_stops_with_the_step_and_quantity_and_keeps_the_last_good_checkpoint(tmp_path):
  config = make_config(num_train_steps=40, steps_per_dispatch=5, checkpoint_every=10,
                       log_every=10, eval_every=40, debug__nan_at_step=23)
  workdir = tmp_path / "run"
  with pytest.raises(training.NonFiniteError,
                     match=r"non-finite loss \(nan\) and grad_norm \(nan\) at step 23\. "
                           r"Stopped without saving it; the last good checkpoint is 20"):
    train.train_and_evaluate(config, str(workdir))
  assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20"]
  state, _ = saved_state(workdir, config)
  assert int(state.step) == 20
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_real_divergence_is_caught_too(tmp_path):
  config = make_config(optim__learning_rate=1e30, num_train_steps=40, eval_every=40,
                       checkpoint_every=40)
  with pytest.raises(training.NonFiniteError, match=r"non-finite .* at step \d+\. Stopped"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints" / "40")


def test_skip_mode_drops_nonfinite_updates_and_counts_them(tmp_path):
  config = make_config(num_train_steps=4, steps_per_dispatch=1, checkpoint_every=1,
                       log_every=2, eval_every=4, keep_checkpoints=10,
                       optim__on_nonfinite="skip", debug__nan_at_step=2)
  workdir = tmp_path / "run"
  results = train.train_and_evaluate(config, str(workdir))
  assert results["skipped_updates"] == 1
  assert np.isfinite(results["test"]["neg_elbo"])
  after_1, _ = saved_state(workdir, config, step=1)
  after_2, _ = saved_state(workdir, config, step=2)
  after_3, _ = saved_state(workdir, config, step=3)
  assert_trees_equal(after_2.params, after_1.params)  # update 2 was dropped ...
  assert int(after_2.step) == 2                         # ... but its batch was used up
  assert int(after_2.opt_state.total_notfinite) == 1
  assert not np.array_equal(jax.tree.leaves(after_3.params)[0], jax.tree.leaves(after_2.params)[0])
  logged = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  assert logged[2]["train/skipped_updates"] == 1 and np.isfinite(logged[2]["train/loss"])


def test_skip_mode_stops_after_too_many_in_a_row(tmp_path):
  config = make_config(optim__on_nonfinite="skip", optim__max_consecutive_nonfinite=3,
                       optim__learning_rate=1e30, num_train_steps=40, eval_every=40,
                       checkpoint_every=40)
  with pytest.raises(training.NonFiniteError, match="3 consecutive non-finite updates"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


MALFORMED = [
    ({"model.laten_dim": 3}, "Did you mean --config.model.latent_dim?"),
    ({"optimm.learning_rate": 1.0}, "Did you mean --config.optim.learning_rate?"),
    ({"model.likelihood": "poisson"},
     "config.model.likelihood='poisson' is invalid: valid values are 'bernoulli', "
     "'gaussian_fixed', 'gaussian_learned'"),
    ({"batch_size": 0}, "config.batch_size=0 is invalid: must be an integer >= 1"),
    ({"model.latent_dim": "ten"}, "flag --config.model.latent_dim=ten"),
    ({"optim.on_nonfinite": "ignore"}, "valid values are 'stop', 'skip'"),
]


def test_malformed_overrides_fail_fast_with_the_field_and_valid_values(tmp_path):
  workdirs = [tmp_path / f"run{i}" for i in range(len(MALFORMED))]
  outcomes = concurrently(lambda workdir, case: _run(workdir, {**SMALL, **case[0]}, timeout=120),
                          workdirs, MALFORMED, workers=3)
  for workdir, (_, message), (code, out) in zip(workdirs, MALFORMED, outcomes):
    assert code == 1, out[-3000:]
    assert message in out, out[-3000:]
    assert "Traceback" not in out
    assert not os.path.exists(workdir)  # nothing created before the config is valid


def test_overwrite_sets_the_old_run_aside(tmp_path, config_factory):
  workdir = str(tmp_path / "run")
  first = train.train_and_evaluate(config_factory(num_train_steps=10), workdir)
  second = train.train_and_evaluate(config_factory(num_train_steps=10, objective__beta=2.0),
                                    workdir, overwrite=True)
  (aside,) = [d for d in os.listdir(tmp_path) if d.startswith("run.replaced-")]
  kept = workdir_lib.read_json(os.path.join(tmp_path, aside, "results.json"))
  assert kept == json.loads(json.dumps(first))
  assert os.listdir(os.path.join(tmp_path, aside, "checkpoints")) == ["10"]
  assert workdir_lib.read_json(os.path.join(workdir, "config.json"))["objective"]["beta"] == 2
  assert second["steps"] == 10


def test_continue_a_finished_run_with_explicitly_changed_fields(tmp_path, config_factory):
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config_factory(num_train_steps=10), workdir)
  longer = config_factory(num_train_steps=20)
  with pytest.raises(workdir_lib.WorkdirError, match="fields differ: num_train_steps"):
    train.train_and_evaluate(longer, workdir)
  with pytest.raises(workdir_lib.WorkdirError, match="model.latent_dim cannot change"):
    train.train_and_evaluate(config_factory(num_train_steps=20, model__latent_dim=3),
                             workdir, allow_changes=["num_train_steps", "model"])
  results = train.train_and_evaluate(longer, workdir, allow_changes=["num_train_steps"])
  assert results["steps"] == 20
  (archived,) = os.listdir(os.path.join(workdir, "archive"))
  assert workdir_lib.read_json(
      os.path.join(workdir, "archive", archived, "results.json"))["steps"] == 10
  with open(os.path.join(workdir, workdir_lib.HISTORY_FILE), encoding="utf-8") as f:
    (record,) = [json.loads(line) for line in f]
  assert record["resumed_at_step"] == 10
  assert record["changes"] == {"num_train_steps": [10, 20]}
  # Constant learning rate, data order from the step: the same as training 20 at once.
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(longer, straight)
  assert_trees_equal(saved_state(workdir, longer)[0], saved_state(straight, longer)[0])
