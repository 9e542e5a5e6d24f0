"""The two-stochastic-layer family: its bound against log p(x) by quadrature, its terms."""

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.core import distributions as D
from vae_jax.evaluation import evaluator
from vae_jax.models import interface
from vae_jax.models import two_layer_vae as tl
from vae_jax.objectives import iwae

X = np.array([[1.0, 0.0]], np.float32).reshape(1, 2, 1, 1)


def _tiny():
  """Linear Gaussian layers of one unit each (depth 0) over 2 binary pixels: log p(x) is a
  2-D integral, computed on a grid."""
  model = tl.TwoLayerVAE(tl.TwoLayer(image_shape=(2, 1, 1), latent_dim=1, top_latent_dim=1,
                                     width=3, top_width=3, depth=0, activation="tanh"))
  params = model.init(jax.random.PRNGKey(0))
  params = jax.tree.map(lambda v: 0.5 * v, params)   # keep every std within the grid's reach
  # q wider than p (std 1.5 against the prior's ~1): bounded weights, so the IWAE bound
  # converges within a few thousand samples.
  for layer in ("q1", "q2"):
    params[layer]["log_std"]["bias"] = jnp.full_like(params[layer]["log_std"]["bias"],
                                                      np.log(1.5))
  return model, params


def _log_px_by_quadrature(model, params):
  z2 = np.linspace(-9, 9, 721, dtype=np.float32)
  z1 = np.linspace(-12, 12, 961, dtype=np.float32)
  p1 = model._p1(params, jnp.asarray(z2)[:, None])                       # [n2, 1]
  log_p1 = D.gaussian_log_prob_per_dim(z1[None, :], p1.mean, p1.logvar)  # [n2, n1]
  log_px_z1 = model._likelihood(params, jnp.asarray(z1)[:, None]).log_prob(
      jnp.broadcast_to(X[0], (len(z1), 2, 1, 1)))                        # [n1]
  joint = log_px_z1[None] + log_p1 + D.standard_normal_log_prob_per_dim(z2)[:, None]
  return float(jax.nn.logsumexp(joint) + np.log(z1[1] - z1[0]) + np.log(z2[1] - z2[0]))


def test_elbo_and_iwae_bound_below_log_px_by_quadrature():
  model, params = _tiny()
  log_px = _log_px_by_quadrature(model, params)
  n = 4000
  batch = {"image": jnp.asarray(np.repeat(X, n, 0))}
  keys = jax.random.split(jax.random.PRNGKey(1), n)
  terms = jax.jit(model.terms)(params, batch, keys)
  elbo = np.asarray(terms["elbo"], np.float64)
  se = elbo.std() / np.sqrt(n)
  assert elbo.mean() < log_px + 4 * se
  np.testing.assert_allclose(terms["rate"], terms["rate_z1"] + terms["rate_z2"], rtol=1e-5)
  np.testing.assert_allclose(np.sum(terms[interface.KL_PER_DIM], -1), terms["rate"],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(terms["elbo"], -terms["distortion"] - terms["rate"], rtol=1e-5)
  # The log-weights are the same bound's integrand: their mean is the ELBO too.
  log_w = jax.jit(lambda p: model.log_weights(p, batch, keys)(jnp.arange(1)))(params)
  assert abs(float(np.mean(log_w)) - elbo.mean()) < 4 * np.sqrt(2) * se
  # Through both layers, the IWAE bound closes on log p(x) from below.
  small = {"image": jnp.asarray(np.repeat(X, 20, 0))}
  bound = jax.jit(lambda p: iwae.log_px(model.log_weights(p, small, keys[:20]), 20000, 2000))(
      params)
  assert float(np.mean(bound)) < log_px + 1e-3
  assert float(np.mean(bound)) > log_px - 0.02
  assert log_px - elbo.mean() > 0.02   # and the ELBO is really looser


def test_dreg_capability_marks_q_and_keeps_values():
  model, params = _tiny()
  mask = model.posterior_params(params)
  assert all(jax.tree.leaves(mask["q1"]) + jax.tree.leaves(mask["q2"]))
  assert not any(jax.tree.leaves(mask["p1"]) + jax.tree.leaves(mask["px"]))
  batch = {"image": jnp.asarray(np.repeat(X, 3, 0))}
  keys = jax.random.split(jax.random.PRNGKey(2), 3)
  ids = jnp.arange(4)
  np.testing.assert_allclose(model.log_weights_stopped_posterior(params, batch, keys)(ids),
                             model.log_weights(params, batch, keys)(ids), rtol=1e-6)


def test_active_units_are_counted_per_layer():
  model, params = _tiny()
  n = 64
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray((rng.random((n, 2, 1, 1)) > 0.5).astype(np.float32))}
  terms = jax.tree.map(np.asarray, jax.jit(model.terms)(params, batch, jax.random.split(
      jax.random.PRNGKey(0), n)))
  groups = terms[interface.LATENT_GROUPS]
  groups["z1"] = np.stack([groups["z1"][:, 0], np.zeros(n, np.float32)], 1)  # one dead unit
  summary = evaluator.summarize(terms, seed=0, rate_floor=0.0)
  expected = [int(np.var(g, 0)[d] > 0.01) for g in groups.values() for d in range(g.shape[1])]
  assert summary["active_units"] == sum(expected)
  assert summary["active_units_by_layer"] == (f"{summary['active_units_z1']}+"
                                              f"{summary['active_units_z2']}")
  assert summary["active_units_z1"] <= 1 and len(summary["activity_per_dim"]) == 3
