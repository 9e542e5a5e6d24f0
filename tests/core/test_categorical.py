"""Categorical latents: the Gumbel-softmax relaxation's limits, the closed-form KL, the posterior."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.core import categorical

LOGITS = jnp.log(jnp.array([[0.6, 0.3, 0.1], [0.05, 0.15, 0.8]]))  # N = 2 variables, K = 3


def _relaxed(temperature, num=20_000, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), num)
  logits = jnp.broadcast_to(LOGITS, (num, *LOGITS.shape))
  return np.asarray(jax.jit(categorical.gumbel_softmax)(keys, logits, temperature))


def test_relaxed_samples_become_one_hot_as_the_temperature_falls():
  largest = {t: _relaxed(t).max(-1).mean() for t in (5.0, 1.0, 0.1, 0.01)}
  assert largest[5.0] < largest[1.0] < largest[0.1] < largest[0.01]
  assert largest[5.0] < 0.6 and largest[0.01] > 0.99
  np.testing.assert_allclose(_relaxed(0.5).sum(-1), 1.0, atol=1e-5)   # on the simplex


def test_relaxed_mean_approaches_the_class_probabilities_and_argmax_is_exact():
  probs = np.exp(np.asarray(LOGITS))
  # Gumbel-max: the argmax is an exact categorical draw at any temperature.
  hot = _relaxed(2.0)
  frequencies = np.stack([np.mean(hot.argmax(-1) == k, axis=0) for k in range(3)], -1)
  np.testing.assert_allclose(frequencies, probs, atol=4 * math.sqrt(0.25 / len(hot)))
  # The mean of the relaxed samples is the class probabilities only as tau -> 0.
  err = {t: np.abs(_relaxed(t).mean(0) - probs).max() for t in (2.0, 0.05)}
  assert err[2.0] > 0.05
  assert err[0.05] < 0.015


def test_kl_to_uniform_matches_monte_carlo():
  logits = jax.random.normal(jax.random.PRNGKey(3), (4, 5, 6)) * 2.0
  exact = categorical.kl_to_uniform_per_latent(logits)                 # [4, 5]
  num = 20_000

  @jax.jit
  def monte_carlo(logits, keys):  # log q(z) - log (1/K) per variable at exact draws z ~ q
    z = categorical.Categorical(logits).sample_indexed(keys, jnp.arange(num))
    per_latent = jnp.sum(z.reshape(4, num, 5, 6) * jax.nn.log_softmax(logits, -1)[:, None],
                         -1) + math.log(6)
    return per_latent.mean(1), per_latent.std(1) / math.sqrt(num)
  mc, se = monte_carlo(logits, jax.random.split(jax.random.PRNGKey(4), 4))
  assert np.all(np.abs(np.asarray(mc - exact)) < 4 * np.asarray(se) + 1e-4)
  assert np.all(np.asarray(exact) >= 0)
  np.testing.assert_allclose(categorical.kl_to_uniform_per_latent(jnp.zeros((2, 7))), 0.0,
                             atol=1e-6)


def test_posterior_draws_are_one_hot_and_scored_by_log_prob():
  q = categorical.Categorical(jnp.stack([LOGITS, LOGITS[::-1]]))      # B = 2
  keys = jax.random.split(jax.random.PRNGKey(5), 2)
  z = q.sample(keys)
  assert z.shape == (2, 6)
  np.testing.assert_array_equal(np.asarray(z).reshape(2, 2, 3).sum(-1), 1.0)
  chosen = np.asarray(z).reshape(2, 2, 3).argmax(-1)
  log_q = np.asarray(jax.nn.log_softmax(q.logits, -1))
  expected = [log_q[b, 0, chosen[b, 0]] + log_q[b, 1, chosen[b, 1]] for b in range(2)]
  np.testing.assert_allclose(q.log_prob(z), expected, rtol=1e-6)
  np.testing.assert_allclose(q.mean.reshape(2, 2, 3).sum(-1), 1.0, rtol=1e-6)
  # Draw j of example i depends on (key i, j) only: any chunking gives the same draws.
  draw = jax.jit(q.sample_indexed)
  np.testing.assert_array_equal(draw(keys, jnp.arange(6))[:, 2:4], draw(keys, jnp.arange(2, 4)))
  # Scored against every posterior at once (the mutual information's aggregate).
  assert q.log_prob(z[:, None]).shape == (2, 2)


def test_straight_through_is_one_hot_forward_and_relaxed_backward():
  relaxed = jnp.array([[0.2, 0.7, 0.1]])
  np.testing.assert_array_equal(categorical.straight_through(relaxed), [[0.0, 1.0, 0.0]])
  weights = jnp.array([1.0, 2.0, 3.0])
  grad_st = jax.grad(lambda r: jnp.sum(categorical.straight_through(r) * weights))(relaxed)
  grad_relaxed = jax.grad(lambda r: jnp.sum(r * weights))(relaxed)
  np.testing.assert_array_equal(grad_st, grad_relaxed)
