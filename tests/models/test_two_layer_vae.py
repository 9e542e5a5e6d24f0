"""The two-stochastic-layer family: its bound against log p(x) by quadrature, its terms."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vae_jax import models
from vae_jax.core import checks
from vae_jax.core import distributions as D
from vae_jax.data import datasets
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


def test_std_is_exp_of_a_linear_output_as_in_the_papers_code():
  """yburda/iwae iwae.py GaussianSampler.random: sigma = exp(Linear(h)); here logvar = 2 x it."""
  model, params = _tiny()
  x = jnp.asarray(np.repeat(X, 2, 0))
  q1 = model.posterior(params, {"image": x})
  head = params["q1"]["log_std"]
  linear = x.reshape(2, -1) @ head["kernel"] + head["bias"]     # depth 0: no hidden layer
  np.testing.assert_allclose(np.exp(0.5 * q1.logvar), np.exp(linear), rtol=1e-6)


def test_glorot_uniform_init_is_the_papers():
  """yburda/iwae nnet.py Linear.random: W ~ U(+-sqrt(6 / (n_in + n_out))), b = 0, every layer;
  the config's model.init reaches every dense layer of the family."""
  config = ml_collections.ConfigDict({"model": {
      "name": "two_layer_vae", "latent_dim": 100, "top_latent_dim": 50, "width": 200,
      "top_width": 100, "depth": 2, "activation": "tanh", "likelihood": "bernoulli",
      "init": "glorot_uniform"}})
  tl.validate(config, datasets.info("binarized_mnist"))
  model = tl.build(config, datasets.info("binarized_mnist"))
  params = model.init(jax.random.PRNGKey(0))
  layers = [(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)]
  assert len(layers) == 2 * (3 * 4 + 3)   # q1, q2, p1: 2 hidden + mean + log_std; px: 3
  for path, leaf in layers:
    name = jax.tree_util.keystr(path)
    if name.endswith("['bias']"):
      assert not np.any(np.asarray(leaf)), name
      continue
    n_in, n_out = leaf.shape
    bound = np.sqrt(6.0 / (n_in + n_out))
    assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.95 * bound, name
    assert np.var(leaf) == pytest.approx(2.0 / (n_in + n_out), rel=0.1), name
  # Without model.z2_mean_draws (runs recorded before it), z2 is counted as before.
  assert model.z2_mean_draws == tl.RECORDED_Z2_MEAN_DRAWS == tl.ADDED_FIELDS["z2_mean_draws"]
  config.model.init = "glorot"
  with pytest.raises(checks.ConfigError, match="model.init"):
    tl.validate(config, datasets.info("binarized_mnist"))


def test_z2_is_counted_at_one_draw_of_z1_as_the_papers_code():
  """yburda/iwae iwae.py get_units_variances: z2's activity is the variance over examples of
  the mean of q(z2|z1) at one sampled z1 each; more draws average z1's noise away."""
  model, params = _tiny()
  n = 256
  batch = {"image": jnp.asarray(np.repeat(X, n, 0))}   # one x: E_q[z2|x] does not vary
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  spread = {}
  for draws in (1, 64):
    counted = tl.TwoLayerVAE(model.module, z2_mean_draws=draws)
    z2 = np.asarray(jax.jit(counted.terms)(params, batch, keys)[interface.LATENT_GROUPS]["z2"])
    spread[draws] = float(np.var(z2))
  assert spread[1] > 10 * spread[64] > 0   # z1's noise shows at one draw, averages away at 64
  assert tl.TwoLayerVAE(model.module).z2_mean_draws == tl.PAPER_Z2_MEAN_DRAWS == 1


def test_a_run_recorded_before_init_and_z2_mean_draws_keeps_its_meaning():
  """Recorded configs lack the fields: they read as what the family then did (LeCun-normal
  weights, z2 counted over 16 draws), so old runs resume and evaluate as they were."""
  recorded = {"model": {"name": "two_layer_vae", "latent_dim": 4, "top_latent_dim": 2,
                        "width": 8, "top_width": 8, "depth": 1, "activation": "tanh",
                        "likelihood": "bernoulli"}}
  assert set(models.upgrade_recorded(recorded)) == {"model.init", "model.z2_mean_draws"}
  model = tl.build(ml_collections.ConfigDict(recorded), datasets.info("binarized_mnist"))
  assert (model.module.dense_init, model.z2_mean_draws) == ("lecun_normal", 16)


def _embed_one_layer(one: dict, two: dict) -> dict:
  """Table 1's one-layer model as a point of the two-layer family: q(z1|x) is the one-layer
  q(z|x) on z1's first 50 units and N(0, 1) on the rest, p(x|z1) reads those 50 units only,
  and q(z2|z1) = p(z2) = N(0, I), p(z1|z2) = N(0, I) (their heads' weights and biases zero)."""
  extra = two["q1"]["mean"]["bias"].shape[0] - one["enc"]["mean"]["bias"].shape[0]
  pad = lambda a, axis: jnp.pad(a, [(0, extra if i == axis else 0) for i in range(a.ndim)])
  zero = lambda tree: jax.tree.map(jnp.zeros_like, tree)
  q1 = {**one["enc"], "mean": jax.tree.map(lambda a: pad(a, a.ndim - 1), one["enc"]["mean"]),
        "log_std": jax.tree.map(lambda a: pad(0.5 * a, a.ndim - 1), one["enc"]["logvar"])}
  del q1["logvar"]
  px = {**one["dec"], "hidden_0": {"kernel": pad(one["dec"]["hidden_0"]["kernel"], 0),
                                   "bias": one["dec"]["hidden_0"]["bias"]}}
  heads = lambda layer: {**two[layer], "mean": zero(two[layer]["mean"]),
                         "log_std": zero(two[layer]["log_std"])}
  return {"q1": q1, "px": px, "q2": heads("q2"), "p1": heads("p1")}


@pytest.mark.slow  # compiles both of Table 1's models
def test_the_two_layer_family_contains_the_one_layer_model():
  """Table 1's two-layer model can be its one-layer model exactly (the same log weight at every
  draw, so the same ELBO and IWAE bounds): a two-layer run whose training loss stays above a
  one-layer run's is short of optimisation, not of capacity (docs/objectives.md)."""
  from configs import iwae as iwae_config  # pylint: disable=g-import-not-at-top
  info = datasets.info("binarized_mnist")
  one_model = models.build(iwae_config.get_config("layers=1"), info)
  two_model = models.build(iwae_config.get_config("layers=2"), info)

  @jax.jit
  def parameters(key):
    """Any one-layer parameters (random weights and biases, not a trained model's), embedded."""
    leaves, tree = jax.tree.flatten(one_model.init(key))
    noise = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    one = jax.tree.unflatten(tree, [v + 0.1 * jax.random.normal(k, v.shape)
                                    for v, k in zip(leaves, noise)])
    return one, _embed_one_layer(one, two_model.init(jax.random.fold_in(key, 2)))

  one, two = parameters(jax.random.PRNGKey(0))
  n, c = 16, 8
  images = (jax.random.uniform(jax.random.PRNGKey(3), (n, 28, 28, 1)) < 0.3).astype(jnp.float32)
  batch = {"image": images}
  keys = jax.random.split(jax.random.PRNGKey(4), n)
  ids = jnp.arange(c)

  @jax.jit
  def both(one, two):
    z1 = two_model.posterior(two, batch).sample_indexed(keys, ids)           # [n, c, 100]
    z = z1[..., :one_model.latent_dim]
    q = one_model.posterior(one, batch)
    log_w_one = (one_model.log_likelihood(one, batch)(z) + jnp.sum(
        D.standard_normal_log_prob_per_dim(z)
        - D.gaussian_log_prob_per_dim(z, q.mean[:, None], q.logvar[:, None]), -1))
    return two_model.log_weights(two, batch, keys)(ids), log_w_one

  log_w_two, log_w_one = both(one, two)                                        # [n, c] each
  assert float(jnp.std(log_w_one)) > 1.0   # the weights vary: the check is not of constants
  np.testing.assert_allclose(log_w_two, log_w_one, rtol=1e-5, atol=1e-3)
