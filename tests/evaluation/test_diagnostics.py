"""Active units, mutual information and the posterior-collapse alarm."""

import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import REPO
from vae_jax.evaluation import saved_run as checkpoint_eval
from vae_jax.data import datasets
from vae_jax.evaluation import diagnostics
from vae_jax.evaluation import evaluator as evaluation
from vae_jax import models
from vae_jax import parallel
from vae_jax.core import distributions as D
from vae_jax.training import loop as train
from vae_jax.training import workdir as workdir_lib

INFORMATIVE = [0, 3, 4]  # of 6 latent dimensions


def synthetic_encoder(config_factory, scale):
  """A linear encoder (no hidden layer) whose mean reads x only in INFORMATIVE dims."""
  config = config_factory(model__depth=0, model__latent_dim=6)
  model = models.build(config, datasets.info("digits"))
  params = model.init(jax.random.PRNGKey(0))
  kernel = np.zeros((64, 6), np.float32)
  kernel[:, INFORMATIVE] = scale * np.random.default_rng(0).normal(size=(64, 3))
  params["enc"]["mean"] = {"kernel": kernel, "bias": np.full(6, 0.3, np.float32)}
  params["enc"]["logvar"] = {"kernel": np.zeros((64, 6), np.float32),
                             "bias": np.full(6, -2.0, np.float32)}
  evaluator = evaluation.Evaluator(model, "dynamic", 0, datasets.load("digits").arrays("test"),
                                   100)
  return evaluator.evaluate(parallel.replicate(params))


def test_active_units_count_exactly_the_informative_dimensions(config_factory):
  summary = synthetic_encoder(config_factory, scale=0.5)
  assert summary["active_units"] == len(INFORMATIVE)
  activity = np.array(summary["activity_per_dim"])
  assert np.all(activity[INFORMATIVE] > 0.01)
  assert np.all(np.delete(activity, INFORMATIVE) == 0)
  assert 0 < summary["mutual_information"] <= np.log(300)  # bounded by log N


def test_mutual_information_is_zero_when_q_ignores_x(config_factory):
  summary = synthetic_encoder(config_factory, scale=0.0)
  assert summary["active_units"] == 0
  assert abs(summary["mutual_information"]) < 1e-5
  assert "no active latent units" in summary["posterior_collapse"]


def test_mutual_information_of_a_known_gaussian_channel():
  # z = m + noise, m ~ N(0, 1) per dim, noise var 0.25: I = 0.5 log(1 + 1/0.25) per dim.
  n = 4000
  mean = np.random.default_rng(0).normal(size=(n, 2))
  logvar = np.full((n, 2), np.log(0.25))
  mi = diagnostics.mutual_information(D.DiagonalGaussian(mean, logvar), seed=0)
  assert abs(mi - 2 * 0.5 * np.log(5.0)) < 0.1  # the estimator is biased low by O(1/N)


@pytest.mark.slow
def test_collapse_alarm_fires_on_forced_collapse_and_not_on_healthy_run(
    tmp_path, config_factory, caplog):
  caplog.set_level(logging.WARNING)
  healthy = train.train_and_evaluate(config_factory(), str(tmp_path / "healthy"))
  assert healthy["posterior_collapse"] == {"final": None, "alarm_steps": []}
  assert "posterior collapse" not in caplog.text
  collapsed = train.train_and_evaluate(
      config_factory(objective__beta=200.0, num_train_steps=100, eval_every=50,
                     log_every=50, checkpoint_every=50), str(tmp_path / "collapsed"))
  assert collapsed["posterior_collapse"]["final"].startswith("posterior collapse")
  assert collapsed["posterior_collapse"]["alarm_steps"][-1] == 100
  assert "step 100: posterior collapse" in caplog.text


@pytest.mark.slow
def test_evaluate_command_is_read_only_and_never_overwrites(tmp_path, config_factory):
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config_factory(), workdir)
  untouched = {p: open(os.path.join(workdir, p), "rb").read()
               for p in ("results.json", "metrics.jsonl", "config.json")}
  record = checkpoint_eval.evaluate_checkpoint(workdir, num_importance_samples=20)
  # The same checkpoint, k and seed as the run's final evaluation: the same numbers.
  assert record["step"] == 20
  for key in ("neg_elbo", "nll", "active_units", "mutual_information"):
    assert record["test"][key] == pytest.approx(results["test"][key], rel=1e-6)
  assert os.path.exists(os.path.join(workdir, "eval", "step_00000020_k20.json"))
  with pytest.raises(workdir_lib.WorkdirError, match="already evaluated"):
    checkpoint_eval.evaluate_checkpoint(workdir, num_importance_samples=20)
  with pytest.raises(workdir_lib.WorkdirError, match=r"available: \[10, 20\]"):
    checkpoint_eval.evaluate_checkpoint(workdir, step=15)
  earlier = checkpoint_eval.evaluate_checkpoint(workdir, step=10, num_importance_samples=0)
  assert "nll" not in earlier["test"] and earlier["step"] == 10
  for p, content in untouched.items():
    assert open(os.path.join(workdir, p), "rb").read() == content
  # The absl entry point, as users run it.
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}",
                         "--num_importance_samples=3"], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.exists(os.path.join(workdir, "eval", "step_00000020_k3.json"))
  assert "NLL(k=3)" in proc.stderr
  # A user error (here: a checkpoint already evaluated) is one FATAL line, no traceback.
  proc = subprocess.run([sys.executable, "-m", "experiments.evaluate", f"--workdir={workdir}",
                         "--num_importance_samples=3"], cwd=REPO, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 1 and "FATAL WorkdirError" in proc.stderr, proc.stderr[-2000:]
  assert "already evaluated" in proc.stderr and "Traceback" not in proc.stderr
