"""The importance-weighted bound against probabilistic PCA's closed-form log p(x)."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.linear_gaussian import X, exact_posterior, log_likelihood_fn, log_px
from vae_jax.core import distributions as D
from vae_jax.objectives import iwae


def iwae_replicates(mean, logvar, k, replicates, chunk_size=None, seed=0):
  """[len(X), replicates] independent IWAE-k estimates."""
  rep = lambda a: jnp.repeat(jnp.asarray(a, jnp.float32), replicates, axis=0)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(X) * replicates)
  x = rep(X)[:, None]  # broadcasts against z [B, chunk, K]
  q = D.DiagonalGaussian(rep(mean), rep(logvar))
  est = iwae.log_px(iwae.gaussian_log_weights(q, log_likelihood_fn(x), keys), k, chunk_size or k)
  return np.asarray(est, np.float64).reshape(len(X), replicates)


def off_posterior():
  mean, logvar = exact_posterior(X)
  return mean + np.array([0.3, -0.2]), logvar + np.array([0.4, -0.5])


def test_exact_posterior_gives_log_px_for_every_k():
  mean, logvar = exact_posterior(X)
  for k in (1, 7, 100):
    est = iwae_replicates(mean, logvar, k, replicates=5)
    for i, x in enumerate(X):
      np.testing.assert_allclose(est[i], log_px(x), atol=2e-4)


def test_bound_holds_and_tightens_with_k_in_expectation():
  mean, logvar = off_posterior()
  means, errs = [], []
  for k in (1, 10, 100):
    est = iwae_replicates(mean, logvar, k, replicates=4000, seed=k)
    means.append(est.mean(1))
    errs.append(est.std(1) / np.sqrt(est.shape[1]))
  for i, x in enumerate(X):
    m = [mk[i] for mk in means]
    e = [ek[i] for ek in errs]
    assert m[0] < m[1] < m[2]                      # grows with k
    assert m[0] + 3 * e[0] < m[1] and m[1] + 3 * e[1] < m[2] + 1e-3
    assert m[2] < log_px(x) + 3 * e[2]             # still below log p(x)


def test_large_k_reaches_log_px():
  mean, logvar = off_posterior()
  est = iwae_replicates(mean, logvar, 5000, replicates=4, chunk_size=500)
  for i, x in enumerate(X):
    assert abs(est[i].mean() - log_px(x)) < 0.02  # observed bias at k=5000: < 0.005 nats


def test_chunked_and_unchunked_agree():
  mean, logvar = off_posterior()
  whole = iwae_replicates(mean, logvar, 50, replicates=3, chunk_size=50)
  for chunk in (1, 7, 16):
    np.testing.assert_allclose(iwae_replicates(mean, logvar, 50, 3, chunk_size=chunk),
                               whole, rtol=0, atol=2e-5)
