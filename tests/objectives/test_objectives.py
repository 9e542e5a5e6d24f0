"""The ELBO against a model with a closed-form log p(x), and the loss's knobs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.linear_gaussian import K, X, exact_posterior, log_likelihood_fn, log_px
from vae_jax.core import distributions as D
from vae_jax.objectives import elbo as objectives

def terms_for(x, mean, logvar, num_samples, kl_estimator, seed=0):
  """ELBO terms of num_samples independent draws for each row of x."""
  rep = lambda a: jnp.repeat(jnp.asarray(a, jnp.float32), num_samples, axis=0)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(x) * num_samples)
  q = D.DiagonalGaussian(rep(mean), rep(logvar))
  terms = objectives.gaussian_elbo_terms(q, log_likelihood_fn(rep(x)), keys, kl_estimator)
  return jax.tree.map(lambda v: np.asarray(v).reshape(len(x), num_samples, *v.shape[1:]),
                      terms)


def test_elbo_equals_log_px_for_every_sample_at_the_exact_posterior():
  # With q = p(z|x), log p(x|z) + log p(z) - log q(z|x) = log p(x) for *every* z.
  mean, logvar = exact_posterior(X)
  elbo = terms_for(X, mean, logvar, 64, "mc")["elbo"]
  for i, x in enumerate(X):
    np.testing.assert_allclose(elbo[i], log_px(x), atol=2e-4)


def test_analytic_elbo_equals_log_px_in_expectation_at_the_exact_posterior():
  mean, logvar = exact_posterior(X)
  elbo = terms_for(X, mean, logvar, 100_000, "analytic")["elbo"]
  for i, x in enumerate(X):
    stderr = elbo[i].std() / np.sqrt(elbo.shape[1])
    assert abs(elbo[i].mean() - log_px(x)) < 4 * stderr + 1e-4


def test_elbo_gap_is_kl_to_the_true_posterior_and_positive():
  # For any Gaussian q: log p(x) - ELBO = KL(q || p(z|x)) >= 0 (here q is off).
  post_mean, post_logvar = exact_posterior(X)
  mean, logvar = post_mean + np.array([0.4, -0.3]), post_logvar + np.array([0.5, -0.8])
  elbo = terms_for(X, mean, logvar, 100_000, "analytic")["elbo"]
  pv, qv = np.exp(post_logvar), np.exp(logvar)
  kl = 0.5 * np.sum(qv / pv + (post_mean - mean) ** 2 / pv - 1 + post_logvar - logvar, -1)
  for i, x in enumerate(X):
    stderr = elbo[i].std() / np.sqrt(elbo.shape[1])
    assert elbo[i].mean() < log_px(x)
    assert abs((log_px(x) - elbo[i].mean()) - kl[i]) < 4 * stderr + 1e-4


def test_terms_are_consistent_per_example():
  mean, logvar = exact_posterior(X)
  t = terms_for(X, mean, logvar, 3, "analytic")
  np.testing.assert_allclose(t["elbo"], -t["distortion"] - t["rate"], rtol=1e-6)
  np.testing.assert_allclose(t["rate"], t["kl_per_dim"].sum(-1), rtol=1e-6)
  assert t["kl_per_dim"].shape == (len(X), 3, K)


def test_kl_warmup_ramps_linearly_from_zero():
  beta = lambda s: float(objectives.beta_at(jnp.int32(s), 4.0, 100))
  assert [beta(0), beta(25), beta(100), beta(1000)] == [0.0, 1.0, 4.0, 4.0]
  assert float(objectives.beta_at(jnp.int32(0), 4.0, 0)) == 4.0


def test_free_bits_floors_each_dimension_and_stops_its_gradient():
  # Batch-mean KL per dimension: 0.05 (below lambda = 0.5) and 2.0 (above).
  kl = jnp.array([[0.04, 1.5], [0.06, 2.5]])
  rate = objectives.free_bits_rate(kl, 0.5)
  assert float(rate) == pytest.approx(0.5 + 2.0)
  grad = jax.grad(objectives.free_bits_rate)(kl, 0.5)
  np.testing.assert_allclose(grad, [[0.0, 0.5], [0.0, 0.5]])


def test_training_loss_is_distortion_plus_beta_rate():
  terms = {"distortion": jnp.array([10.0, 20.0]), "rate": jnp.array([3.0, 5.0]),
           "elbo": jnp.array([-13.0, -25.0]), "kl_per_dim": jnp.array([[1.0, 2.0],
                                                                      [2.0, 3.0]])}
  loss, metrics = objectives.training_loss(terms, jnp.float32(2.0), 0.0)
  assert float(loss) == pytest.approx(15.0 + 2.0 * 4.0)
  assert float(metrics["elbo"]) == pytest.approx(-19.0)
