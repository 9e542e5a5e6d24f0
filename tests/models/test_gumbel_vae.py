"""The Gumbel-softmax VAE: honest bounds over discrete codes, the annealed relaxation, its config."""

import itertools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gumbel
from tests.conftest import SMALL, assert_trees_equal, saved_state, set_fields
from vae_jax import models
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.objectives import iwae
from vae_jax.training import loop as train

N, K = 2, 3


def _config(**fields):
  config = gumbel.get_config(f"num_latents={N},categories={K}")
  return set_fields(config, {"model.width": 16, **fields})


def _model_params_batch(**fields):
  model = models.build(_config(**fields), datasets.DataInfo("test", (4, 4, 1), True, None))
  params = model.init(jax.random.PRNGKey(0))
  image = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, (2, 4, 4, 1)).astype(jnp.float32)
  return model, params, {"image": image}


def _enumerated(model, params, batch):
  """Exact log p(x), ELBO and every log p(x|z) of the K^N codes, by enumeration."""
  codes = jnp.array([np.eye(K)[list(c)].ravel() for c in itertools.product(range(K), repeat=N)])
  x = batch["image"]
  log_px_z = model.likelihood(params, jnp.broadcast_to(codes, (len(x), *codes.shape))).log_prob(
      x[:, None])                                                           # [B, K^N]
  q = model.posterior(params, batch)
  log_q = q.expand_samples().log_prob(codes[None])                          # [B, K^N]
  log_px = jax.nn.logsumexp(log_px_z, axis=1) - N * math.log(K)
  elbo = jnp.sum(jnp.exp(log_q) * (log_px_z - N * math.log(K) - log_q), axis=1)
  return np.asarray(log_px), np.asarray(elbo), np.asarray(log_px_z)


def test_reported_bounds_use_discrete_codes_and_are_valid():
  model, params, batch = _model_params_batch()
  log_px, elbo, _ = _enumerated(model, params, batch)
  assert np.all(elbo <= log_px + 1e-5)
  # One-sample ELBO terms at exact draws: unbiased for the exact ELBO.
  reps = 4000
  keys = jax.random.split(jax.random.PRNGKey(2), reps * 2).reshape(reps, 2, -1)
  draws = jax.jit(jax.vmap(lambda k: model.terms(params, batch, k)["elbo"]))(keys)
  se = np.asarray(draws.std(0)) / math.sqrt(reps)
  assert np.all(np.abs(np.asarray(draws.mean(0)) - elbo) < 4 * se + 1e-3)
  # IWAE over discrete codes: a bound that closes on the exact log p(x) as k grows.
  log_weights = model.log_weights(params, batch, jax.random.split(jax.random.PRNGKey(3), 2))
  k1 = jax.jit(lambda: log_weights(jnp.arange(reps)))()                   # k = 1 weights
  assert np.all(np.abs(np.asarray(k1.mean(1)) - elbo) < 4 * np.asarray(k1.std(1)) / 63 + 1e-3)
  estimate = jax.jit(lambda: iwae.log_px(log_weights, 2000, 500))()
  np.testing.assert_allclose(estimate, log_px, atol=0.02)


def test_training_terms_relax_at_the_annealed_temperature():
  model, params, batch = _model_params_batch(**{"model.anneal_rate": 1e-3})
  keys = jax.random.split(jax.random.PRNGKey(4), 2)
  first = model.training_terms(params, batch, keys, jnp.int32(0))
  late = model.training_terms(params, batch, keys, jnp.int32(100_000))
  np.testing.assert_allclose(first["temperature"], 1.0)
  np.testing.assert_allclose(late["temperature"], 0.5)
  np.testing.assert_allclose(model.temperature(jnp.int32(500)), math.exp(-0.5), rtol=1e-6)
  _, _, log_px_z = _enumerated(model, params, batch)
  # Relaxed codes are not one-hot: their log p(x|z) is none of the discrete codes'.
  relaxed = -np.asarray(first["distortion"])
  assert np.min(np.abs(log_px_z - relaxed[:, None]), axis=1).max() > 1e-3
  # Straight-through decodes the one-hot argmax: one of the discrete codes' values.
  st_model, _, _ = _model_params_batch(**{"model.straight_through": True})
  hard = -np.asarray(st_model.training_terms(params, batch, keys, jnp.int32(0))["distortion"])
  assert np.min(np.abs(log_px_z - hard[:, None]), axis=1).max() < 1e-3
  # The KL is the closed form either way, and the reported terms are honest.
  np.testing.assert_allclose(first["rate"], model.terms(params, batch, keys)["rate"], rtol=1e-6)


@pytest.mark.parametrize("field,value,message", [
    ("model.categories", 1, "categories=1.*>= 2"),
    ("model.min_temperature", 0.0, "min_temperature=0.0.*> 0"),
    ("model.initial_temperature", 0.25, "initial_temperature=0.25.*>= model.min_temperature"),
    ("model.anneal_rate", -1.0, "anneal_rate=-1.0.*>= 0"),
])
def test_bad_fields_are_refused_naming_them(field, value, message):
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate(set_fields(_config(), {field: value}))


@pytest.mark.slow
def test_trains_end_to_end_and_resumes_exactly(tmp_path):
  """The temperature follows the step, so a resumed run anneals as an uninterrupted one."""
  config = set_fields(_config(**{"model.anneal_rate": 0.05}),
                      {**SMALL, "model.width": 16, "eval.num_importance_samples": 10})
  full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
  results = train.train_and_evaluate(config, full)
  assert results["test"]["nll"] <= results["test"]["neg_elbo"] + 1.0
  assert "temperature" in open(os.path.join(full, "metrics.jsonl")).read()
  train.train_and_evaluate(config, crashed)
  os.remove(os.path.join(crashed, "results.json"))
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(os.path.join(crashed, "checkpoints", "20"))
  assert train.train_and_evaluate(config, crashed)["steps"] == 20
  assert_trees_equal(saved_state(full, config)[0], saved_state(crashed, config)[0])
