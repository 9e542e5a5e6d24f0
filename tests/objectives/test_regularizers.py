"""The disentanglement regularizers against independent computations on small cases."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import assert_trees_equal, make_config
from vae_jax import models
from vae_jax import parallel
from vae_jax.core import checks
from vae_jax.core import distributions as D
from vae_jax.data import datasets
from vae_jax.objectives import auxiliary
from vae_jax.objectives import regularizers
from vae_jax import validation
from vae_jax.training import state as state_lib
from vae_jax.training import step as training


def _correlated_posteriors(rng, batch, rho, sigma):
  """Means with correlation rho between dimensions 0 and 1, a fixed posterior std sigma."""
  cov = np.array([[1.0, rho], [rho, 1.0]])
  mean = rng.multivariate_normal(np.zeros(2), cov, size=batch)
  logvar = np.full_like(mean, 2 * math.log(sigma))
  z = mean + sigma * rng.standard_normal(mean.shape)
  return z, mean, logvar, cov + sigma**2 * np.eye(2)


def test_total_correlation_converges_to_the_closed_form_of_a_correlated_gaussian():
  """q(z) = N(0, C + s^2 I): TC = (sum log diag - log det) / 2. The estimator drops the
  constant (d - 1) log B (as disentanglement_lib's); with it back, it converges."""
  rng = np.random.default_rng(0)
  errors = []
  for batch in (64, 512, 4096):
    z, mean, logvar, cov = _correlated_posteriors(rng, batch, rho=0.8, sigma=0.5)
    closed = 0.5 * (np.sum(np.log(np.diag(cov))) - np.log(np.linalg.det(cov)))
    estimate = float(regularizers.total_correlation(jnp.asarray(z), jnp.asarray(mean),
                                                    jnp.asarray(logvar))) + math.log(batch)
    errors.append(abs(estimate - closed))
  assert closed > 0.25
  assert errors[-1] < 0.05 * closed
  assert errors[-1] < errors[0]


def test_total_correlation_of_independent_dimensions_is_near_zero():
  rng = np.random.default_rng(1)
  z, mean, logvar, _ = _correlated_posteriors(rng, 4096, rho=0.0, sigma=0.5)
  tc = float(regularizers.total_correlation(jnp.asarray(z), jnp.asarray(mean),
                                            jnp.asarray(logvar))) + math.log(4096)
  assert abs(tc) < 0.03


def _whitened(rng, batch, dim, scale=1.0):
  """Means whose batch covariance (1/B normalisation) is exactly scale * I."""
  x = rng.standard_normal((batch, dim))
  x -= x.mean(0)
  chol = np.linalg.cholesky(x.T @ x / batch)
  return (x @ np.linalg.inv(chol).T) * math.sqrt(scale)


def _dip(name, mean, logvar, lambda_od=5.0, factor=10.0):
  q = D.DiagonalGaussian(jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32))
  rate = jnp.sum(q.kl_per_dim(), axis=-1)
  value, metrics = regularizers.regularizer(
      name, {"lambda_od": lambda_od, "lambda_d_factor": factor}, q, q.mean, rate,
      jnp.int32(0), None)
  return float(metrics["dip_penalty"]), float(value - jnp.mean(rate))


def test_dip_terms_vanish_for_decorrelated_unit_variance_means():
  rng = np.random.default_rng(2)
  mean = _whitened(rng, 256, 4)
  penalty, added = _dip("dip_vae_i", mean, np.zeros_like(mean))
  assert abs(penalty) < 1e-4 and abs(added) < 1e-4
  # DIP-II: Cov[mu] = 0.6 I plus E[Var] = 0.4 I is the identity; DIP-I sees 0.6 I.
  mean = _whitened(rng, 256, 4, scale=0.6)
  logvar = np.full_like(mean, math.log(0.4))
  assert abs(_dip("dip_vae_ii", mean, logvar)[0]) < 1e-4
  dip_i = _dip("dip_vae_i", mean, logvar, lambda_od=5.0, factor=10.0)[0]
  np.testing.assert_allclose(dip_i, 50.0 * 4 * 0.4**2, rtol=1e-4)  # lambda_d sum (0.6-1)^2


def test_dip_penalises_correlation_off_the_diagonal():
  rng = np.random.default_rng(3)
  mean = _whitened(rng, 256, 2)
  mixed = mean @ np.array([[1.0, 0.5], [0.0, 1.0]])  # Cov = [[1, .5], [.5, 1.25]]
  penalty = _dip("dip_vae_i", mixed, np.zeros_like(mixed), lambda_od=2.0, factor=0.0)[0]
  np.testing.assert_allclose(penalty, 2.0 * 2 * 0.5**2, rtol=1e-4)


def test_capacity_rises_linearly_and_holds_at_c_max():
  c = lambda step: float(regularizers.capacity(jnp.int32(step), 25.0, 100_000))
  assert c(0) == 0.0
  np.testing.assert_allclose(c(50_000), 12.5)
  assert c(100_000) == 25.0 and c(300_000) == 25.0


def test_permutation_keeps_marginals_and_breaks_dependence():
  rng = np.random.default_rng(4)
  x = rng.standard_normal(4096)
  z = jnp.asarray(np.stack([x, x + 0.01 * rng.standard_normal(4096)], 1), jnp.float32)
  permuted = np.asarray(auxiliary.permute_dims(z, jax.random.PRNGKey(0)))
  for d in range(2):  # each column is a permutation of its own values
    np.testing.assert_array_equal(np.sort(permuted[:, d]), np.sort(np.asarray(z[:, d])))
  assert np.corrcoef(np.asarray(z).T)[0, 1] > 0.99
  assert abs(np.corrcoef(permuted.T)[0, 1]) < 0.05


# Each model at its "off" setting is the plain VAE (regularizer beta_vae, beta 1).
OFF = {"annealed_vae": {"objective.gamma": 1.0, "objective.c_max": 0.0},
       "beta_tc_vae": {"objective.beta": 1.0},
       "factor_vae": {"objective.gamma": 0.0},
       "dip_vae_i": {"objective.lambda_od": 0.0},
       "dip_vae_ii": {"objective.lambda_od": 0.0}}


def _train(overrides, steps=6):
  config = make_config(**{k.replace(".", "__"): v for k, v in overrides.items()})
  validation.validate(config)
  dataset = datasets.load("digits")
  model = models.build(config, dataset.info)
  tx = state_lib.make_optimizer(config.optim, steps)
  state = state_lib.create_train_state(config.seed, model, tx, auxiliary.get(config))
  spec = training.spec_from_config(config, len(dataset.train),
                                   validation.preprocessing_of(config, dataset.name))
  chunk = training.DataParallelTrainChunk(model, tx, spec)
  rstate, metrics = chunk(parallel.replicate(state), {},
                          parallel.replicate(dataset.arrays("train")), 0, steps)
  return jax.device_get(parallel.unreplicate(rstate)), jax.device_get(
      parallel.unreplicate(metrics))


@pytest.mark.parametrize("name", sorted(OFF))
def test_each_model_at_its_off_setting_is_the_plain_vae(name):
  plain_state, plain = _train({})
  state, metrics = _train({"objective.regularizer": name, **OFF[name]})
  assert np.all(np.isfinite(plain["loss"])) and plain["loss"][-1] < plain["loss"][0]
  np.testing.assert_array_equal(np.asarray(metrics["loss"]), np.asarray(plain["loss"]))
  assert_trees_equal(state.params, plain_state.params)
  if name == "factor_vae":  # its discriminator trained beside, untouched by gamma
    assert np.all(np.isfinite(np.asarray(metrics["discriminator_loss"])))


def test_regularizers_are_refused_where_they_cannot_act():
  for overrides, field in (
      ({"objective.regularizer": "beta_tc", }, "objective.regularizer"),
      ({"objective.regularizer": "dip_vae_i", "objective.free_bits": 0.5},
       "objective.free_bits"),
      ({"objective.regularizer": "annealed_vae", "objective.iteration_threshold": 0},
       "objective.iteration_threshold"),
      ({"objective.regularizer": "factor_vae", "objective.name": "iwae",
        "objective.num_samples": 5}, "objective.regularizer")):
    config = make_config(**{k.replace(".", "__"): v for k, v in overrides.items()})
    with pytest.raises(checks.ConfigError, match=field.replace(".", r"\.")):
      validation.validate(config)
