"""Closed forms of the densities, the KL and the reparameterization trick."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vae_jax.core import distributions as D
from vae_jax.core import likelihoods


def test_gaussian_log_prob_matches_scipy():
  x, mean, logvar = np.array([0.3, -1.2]), np.array([0.1, 0.5]), np.array([-0.7, 1.1])
  expected = stats.norm.logpdf(x, mean, np.exp(0.5 * logvar))
  np.testing.assert_allclose(D.gaussian_log_prob_per_dim(x, mean, logvar), expected,
                             rtol=1e-6)


def test_analytic_kl_equals_large_sample_monte_carlo():
  mean = jnp.array([0.0, 1.5, -0.7, 0.2])
  logvar = jnp.array([0.0, -1.0, 0.8, -3.0])
  n = 400_000
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  z = D.reparameterize(keys, jnp.broadcast_to(mean, (n, 4)), jnp.broadcast_to(logvar, (n, 4)))
  mc = D.kl_monte_carlo_per_dim(z, mean, logvar)
  analytic = D.kl_to_standard_normal_per_dim(mean, logvar)
  stderr = np.std(mc, axis=0) / np.sqrt(n)
  assert np.all(np.abs(np.mean(mc, axis=0) - analytic) < 4 * stderr + 1e-6)
  # KL(q||p) is zero exactly when q is the prior.
  assert float(D.kl_to_standard_normal_per_dim(0.0, 0.0)) == 0.0


def test_reparameterized_gradient_matches_closed_form():
  # E_{z~N(mu, s^2)}[z^2] = mu^2 + s^2: d/dmu = 2 mu, d/dlogvar = s^2 = exp(logvar).
  mu, logvar, n = 0.7, np.log(0.3), 200_000
  keys = jax.random.split(jax.random.PRNGKey(1), n)

  def objective(params):
    m, lv = params
    z = D.reparameterize(keys, jnp.full((n, 1), m), jnp.full((n, 1), lv))
    return jnp.mean(z**2)

  g_mu, g_logvar = jax.grad(objective)((mu, logvar))
  assert abs(float(g_mu) - 2 * mu) < 0.01
  assert abs(float(g_logvar) - np.exp(logvar)) < 0.01


def test_reparameterized_sample_depends_only_on_its_own_key():
  keys = jax.random.split(jax.random.PRNGKey(2), 6)
  mean, logvar = jnp.zeros((6, 3)), jnp.zeros((6, 3))
  full = D.reparameterize(keys, mean, logvar)
  half = D.reparameterize(keys[3:], mean[3:], logvar[3:])
  np.testing.assert_array_equal(full[3:], half)


@pytest.mark.parametrize("logit", [-500.0, -30.0, 0.0, 30.0, 500.0])
def test_bernoulli_log_prob_is_finite_and_exact_for_extreme_logits(logit):
  for x in (0.0, 1.0):
    value = float(D.bernoulli_log_prob_per_dim(jnp.float32(x), jnp.float32(logit)))
    # log sigmoid(l) = -log(1 + e^-l), log(1 - sigmoid(l)) = -log(1 + e^l), in float64.
    expected = -np.logaddexp(0.0, -logit if x == 1 else logit)
    assert np.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_bits_per_dim_of_uniform_density_is_eight():
  # The uniform density on [0, 1]^D has log p = 0: exactly 8 bits per 8-bit pixel.
  assert float(likelihoods.bits_per_dim(jnp.float32(0.0), 784)) == pytest.approx(8.0)
