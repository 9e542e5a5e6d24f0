"""Per-point SVI on probabilistic PCA, whose posterior and log p(x) are known exactly.

There ELBO(q) = log p(x) - KL(q || p(z|x)) for any q, so "SVI reaches the
posterior" and "refinement never lowers the ELBO" are checked in closed form,
without Monte Carlo noise.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import make_config
from tests.linear_gaussian import K, X, exact_posterior, log_likelihood_fn, log_px
from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation
from studies.amortization import svi
from vae_jax import models
from vae_jax import parallel
from vae_jax.training import state as state_lib
from vae_jax.training import step as training

KEYS = jax.random.split(jax.random.PRNGKey(0), len(X))
SVI = {"num_steps": 1500, "num_samples": 8, "learning_rate": 0.05}


def kl_to_posterior(mean, logvar):
  """KL(N(mean, exp(logvar)) || p(z|x)) per example, closed form (both diagonal)."""
  post_mean, post_logvar = exact_posterior(X)
  qv, pv = np.exp(np.asarray(logvar, np.float64)), np.exp(post_logvar)
  diff = np.asarray(mean, np.float64) - post_mean
  return 0.5 * np.sum(qv / pv + diff**2 / pv - 1 + post_logvar - logvar, -1)


def fit(mean, logvar, keys=KEYS, x=X, **overrides):
  return svi.fit(log_likelihood_fn, jnp.asarray(x, jnp.float32), mean, logvar, keys,
                 **{**SVI, **overrides})


def test_svi_from_the_prior_reaches_the_exact_posterior():
  zeros = np.zeros((len(X), K), np.float32)
  assert np.all(kl_to_posterior(zeros, zeros) > 1.0)      # the prior is far from it
  result = fit(zeros, zeros)
  kl = kl_to_posterior(result.mean, result.logvar)
  assert np.all(kl < 0.01), kl                            # approximation gap ~ 0 here
  # ... so a many-sample ELBO of the fitted q matches the closed-form log p(x).
  keys = svi.sample_keys(jax.random.split(jax.random.PRNGKey(1), len(X)), 20_000)
  elbo = svi.elbo_estimate(result.mean, result.logvar, log_likelihood_fn(jnp.asarray(X)),
                           keys, chunk=1000)["elbo"]
  np.testing.assert_allclose(elbo, [log_px(x) for x in X], atol=0.02)
  # The trace climbs: the last steps' estimates are far above the first's.
  trace = np.asarray(result.elbo_trace)
  assert trace.shape == (SVI["num_steps"], len(X))
  assert np.all(trace[-100:].mean(0) > trace[:10].mean(0) + 1.0)


@pytest.mark.parametrize("offset", [0.0, 0.3, 1.0])
def test_refinement_never_lowers_the_elbo(offset):
  """Started anywhere, the exact gap to log p(x) shrinks; at the optimum, stays within noise.

  (Adam's first steps have size ~ learning rate whatever the gradient, so from the
  exact posterior the noisy gradients move q by about that: a few thousandths of a nat.)
  """
  post_mean, post_logvar = exact_posterior(X)
  mean = (post_mean + offset * np.array([1.0, -1.0])).astype(np.float32)
  logvar = (post_logvar + offset * np.array([0.5, -0.5])).astype(np.float32)
  result = fit(mean, logvar, num_steps=300, learning_rate=0.01)
  before, after = kl_to_posterior(mean, logvar), kl_to_posterior(result.mean, result.logvar)
  assert np.all(after <= before + 0.01), (before, after)
  if offset:
    assert np.all(after < 0.2 * before)


def test_one_adam_over_the_batch_is_one_adam_per_point():
  """Example 0 fitted alongside example 1 = example 0 fitted alone (same key)."""
  zeros = np.zeros((len(X), K), np.float32)
  both = fit(zeros, zeros, num_steps=200)
  alone = fit(zeros[:1], zeros[:1], keys=KEYS[:1], x=X[:1], num_steps=200)
  np.testing.assert_allclose(both.mean[:1], alone.mean, atol=1e-5)
  np.testing.assert_allclose(both.logvar[:1], alone.logvar, atol=1e-5)


def test_bad_settings_are_refused():
  zeros = np.zeros((len(X), K), np.float32)
  with pytest.raises(ValueError, match="num_steps >= 1"):
    fit(zeros, zeros, num_steps=0)


@pytest.mark.slow
def test_refinement_raises_a_trained_vaes_elbo():
  """On a VAE trained briefly on `digits`, SVI from the encoder's q never lowers the ELBO.

  Both ELBOs are estimated with the same 200 draws per example (common random
  numbers), so their per-example difference is precise.
  """
  config = make_config(num_train_steps=300)
  data = datasets.load("digits")
  model = models.build(config, data.info)
  tx = state_lib.make_optimizer(config.optim, 300)
  chunk = training.DataParallelTrainChunk(
      model, tx, training.spec_from_config(config, len(data.train), "dynamic"))
  state, _ = chunk(parallel.replicate(state_lib.create_train_state(0, model, tx)), {},
                   parallel.replicate(data.arrays("train")), 0, 300)
  params = parallel.unreplicate(state.params)
  ids = jnp.arange(100, dtype=jnp.int32)
  x = evaluation.eval_inputs(jnp.asarray(data.test[:100]), ids, "dynamic", 0)
  q = model.posterior(params, {"image": x})
  mean, logvar = q.mean, q.logvar
  refined = svi.refine(model, params, x, mean, logvar,
                       jax.random.split(jax.random.PRNGKey(0), 100), num_steps=200,
                       num_samples=4, learning_rate=0.02)
  likelihood = svi.DecoderLikelihood(model)((params, x))
  keys = svi.sample_keys(jax.random.split(jax.random.PRNGKey(1), 100), 200)
  elbo = jax.jit(lambda m, lv: svi.elbo_estimate(m, lv, likelihood, keys, chunk=50)["elbo"])
  gain = np.asarray(elbo(refined.mean, refined.logvar) - elbo(mean, logvar))
  assert gain.mean() > 0.1 and gain.mean() > 10 * gain.std() / np.sqrt(len(gain))
  assert np.all(gain > -0.05), np.sort(gain)[:5]
