"""Why q must depend on x, on `squares` (half black, half white images).

A global q(z) collapses to the prior and its decoder outputs the data mean,
grey 0.5; the amortized encoder does not; per-point SVI refines the encoder's q
without lowering the ELBO. One small study run is shared by the tests.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studies.amortization import config as study_config
from tests.conftest import set_fields
from studies.amortization import study as amortization
from vae_jax import models
from vae_jax.data import datasets
from vae_jax.training import loop as train
from vae_jax import validation
from vae_jax.training import workdir as workdir_lib

SMALL = {"optim.learning_rate": 3e-3, "num_train_steps": 3000,
         "steps_per_dispatch": 1000, "log_every": 3000, "eval_every": 3000,
         "checkpoint_every": 3000, "images.num_reconstructions": 8, "images.num_samples": 8,
         "eval.num_importance_samples_during_training": 0,
         "study.num_test": 100, "study.batch_size": 100, "study.svi_steps": 100,
         "study.elbo_samples": 50, "study.iwae_samples": 200, "study.num_pictures": 4}


def small_config():
  return set_fields(study_config.get_config("data=squares"), SMALL)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("amortization"))
  return workdir, amortization.run_study(small_config(), workdir)


@pytest.mark.slow
def test_global_q_collapses_to_the_prior_and_outputs_the_data_mean(study):
  _, record = study
  assert record["posteriors"]["global"]["rate"]["mean"] < 0.05          # KL ~ 0
  assert record["global_output"]["max_abs_minus_half"] < 0.05           # grey 0.5 everywhere
  assert record["reconstruction_mean_abs_error"]["global"] == pytest.approx(0.5, abs=0.05)
  # Its ELBO is the cost of 784 fair coins: log 0.5 per pixel.
  assert record["posteriors"]["global"]["elbo"]["mean"] == pytest.approx(
      784 * np.log(0.5), abs=3.0)


@pytest.mark.slow
def test_the_amortized_encoder_does_not_collapse(study):
  _, record = study
  # E_x KL(q(z|x) || p(z)) >= I(x; z) = log 2 for a code that tells black from white.
  assert record["posteriors"]["encoder"]["rate"]["mean"] > 0.6
  assert record["reconstruction_mean_abs_error"]["encoder"] < 0.05     # outputs near 0 / 1
  assert record["gaps"]["encoder_minus_global"]["mean"] > 500


@pytest.mark.slow
def test_the_elbo_bounds_the_iwae_estimate(study):
  """log p(x) >= ELBO: the IWAE estimate lies above the encoder's ELBO (the inference gap).

  (Refinement is tested on smooth models in test_svi.py. Here the decoder switches
  from black to white across a boundary in z, so log p(x|z) is ~0 on one side and
  hundreds of nats below on the other: few-sample ELBO estimates and gradients are
  heavy-tailed, and the study's amortization gap on squares is zero within noise.)
  """
  _, record = study
  inference = record["gaps"]["inference"]
  assert inference["mean"] > 3 * inference["se"]
  assert len(record["svi_trace"]["refined"]) == SMALL["study.svi_steps"]


@pytest.mark.slow
def test_outputs_are_written_and_never_replaced(study):
  workdir, _ = study
  paths = amortization.output_paths(workdir)
  assert all(os.path.getsize(p) > 0 for p in paths.values())
  assert "| gap | definition | nats |" in open(paths["md"], encoding="utf-8").read()
  with pytest.raises(workdir_lib.WorkdirError, match="already written"):
    amortization.run_study(small_config(), workdir)


@pytest.mark.slow
def test_finished_runs_are_reused_only_with_the_same_config(study, monkeypatch):
  workdir, _ = study
  def must_not_train(*args, **kwargs):
    raise AssertionError("retrained a finished run")
  monkeypatch.setattr(train, "train_and_evaluate", must_not_train)
  runs = amortization.train_runs(small_config(), workdir)
  assert runs["global"].config.model.encoder == "global"
  other = set_fields(small_config(), {"model.latent_dim": 5})
  with pytest.raises(workdir_lib.WorkdirError, match="model.latent_dim"):
    amortization.train_runs(other, workdir)


@pytest.mark.parametrize("field,value,message", [
    ("study.svi_steps", 0, "config.study.svi_steps=0 is invalid"),
    ("study.num_test", 201, "exceeds the 200 test examples of 'squares'"),
    ("model.latent_dim", 0, "config.model.latent_dim=0 is invalid")])
def test_bad_field_fails_before_training(tmp_path, field, value, message):
  config = set_fields(small_config(), {field: value})
  with pytest.raises(validation.ConfigError, match=message):
    amortization.run_study(config, str(tmp_path / "study"))
  assert not os.path.exists(tmp_path / "study")   # nothing written


def test_global_encoder_ignores_x():
  config = study_config.get_config("data=squares")
  config.model.encoder, config.model.latent_dim = "global", 3
  model = models.build(config, datasets.DataInfo("squares", (8, 8, 1), True, None))
  params = model.init(jax.random.PRNGKey(0))
  assert set(params["enc"]) == {"mean", "logvar"}
  q = model.posterior(params, {"image": jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 1))})
  mean, logvar = q.mean, q.logvar
  assert mean.shape == logvar.shape == (4, 3)
  np.testing.assert_array_equal(mean, jnp.broadcast_to(params["enc"]["mean"], (4, 3)))
  full = study_config.get_config("data=squares")
  full.model.encoder, full.model.decoder = "global", "conv"
  validation.validate(amortization.run_config(full, "global"))  # any decoder goes with it
