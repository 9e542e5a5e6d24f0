"""The training objectives on probabilistic PCA, where log p(x) is known in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from tests import linear_gaussian as lg
from vae_jax.core import checks
from vae_jax.core import distributions as D
from vae_jax.objectives import iwae
from vae_jax.objectives import training_objectives as T


class PPCAModel:
  """PPCA with an amortized linear q(z|x): the DReG capability included."""

  def posterior(self, params, batch):
    mean = batch["image"] @ params["enc"]["A"] + params["enc"]["c"]
    return D.DiagonalGaussian(mean, jnp.broadcast_to(params["enc"]["v"], mean.shape))

  def _log_weights(self, params, batch, keys, stop):
    x = batch["image"]

    def log_likelihood(z):
      loc = z @ params["dec"]["W"].T + params["dec"]["b"]
      return jnp.sum(D.gaussian_log_prob_per_dim(x[:, None], loc, jnp.log(lg.S2)), -1)
    return iwae.gaussian_log_weights(self.posterior(params, batch), log_likelihood, keys, stop)

  def log_weights(self, params, batch, keys):
    return self._log_weights(params, batch, keys, False)

  def log_weights_stopped_posterior(self, params, batch, keys):
    return self._log_weights(params, batch, keys, True)

  def posterior_params(self, params):
    return {k: jax.tree.map(lambda _, e=(k == "enc"): e, v) for k, v in params.items()}


MODEL = PPCAModel()


def _params(shift=0.4):
  """The true decoder; an encoder off the exact posterior (mean shifted, variance too wide),
  so every bound is strictly below log p(x)."""
  m = lg.W.T @ lg.W + lg.S2 * np.eye(lg.K)
  a = np.linalg.solve(m, lg.W.T).T                                  # [DIM, K]
  _, logvar = lg.exact_posterior(lg.X[:1])
  enc = {"A": a, "c": -lg.B @ a + shift, "v": logvar[0] + 0.5}
  return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32),
                      {"enc": enc, "dec": {"W": lg.W, "b": lg.B}})


def _replicas(n, seed=0):
  batch = {"image": jnp.asarray(np.repeat(lg.X[:1], n, 0), jnp.float32)}
  return batch, jax.random.split(jax.random.PRNGKey(seed), n)


def _per_example(name, k, n=4000):
  batch, keys = _replicas(n)
  fn = jax.jit(lambda p, b, ks: T.per_example(name, MODEL.log_weights(p, b, ks)(jnp.arange(k))))
  return np.asarray(fn(_params(), batch, keys), np.float64)


def test_iwae_objective_equals_the_iwae_bound():
  batch = {"image": jnp.asarray(lg.X, jnp.float32)}
  keys = jax.random.split(jax.random.PRNGKey(3), 2)
  _, metrics = jax.jit(lambda p: T.loss(MODEL, p, batch, keys, "iwae", 7, "reparam"))(_params())
  bound = jax.jit(lambda p: iwae.log_px(MODEL.log_weights(p, batch, keys), 7, 3))(_params())
  np.testing.assert_allclose(metrics["objective"], np.mean(bound), rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], -metrics["objective"])


def test_iwae_objective_increases_with_k_below_log_px():
  log_px = lg.log_px(lg.X[0])
  means, ses = [], []
  for k in (1, 5, 50):
    v = _per_example("iwae", k)
    means.append(v.mean())
    ses.append(v.std() / np.sqrt(len(v)))
  for i in range(2):
    assert means[i + 1] - means[i] > 4 * (ses[i] + ses[i + 1]), (means, ses)
  assert means[-1] < log_px + 4 * ses[-1]
  assert log_px - means[0] > 0.1   # the encoder is off: the ELBO is loose
  # The k-sample ELBO is the same bound at every k: only its noise shrinks.
  v1, v50 = _per_example("k_sample_elbo", 1), _per_example("k_sample_elbo", 50)
  assert abs(v1.mean() - v50.mean()) < 4 * (v1.std() + v50.std()) / np.sqrt(len(v1))
  assert v50.std() < v1.std() / 3


@pytest.mark.parametrize("name", ["iwae", "k_sample_elbo"])
def test_gradient_matches_finite_difference(name):
  batch = {"image": jnp.asarray(lg.X, jnp.float32)}
  keys = jax.random.split(jax.random.PRNGKey(5), 2)
  params = _params()
  f = jax.jit(lambda p: T.loss(MODEL, p, batch, keys, name, 5, "reparam")[1]["objective"])
  direction = jax.tree.map(lambda v: jax.random.normal(jax.random.PRNGKey(v.size), v.shape),
                           params)
  grad = jax.grad(f)(params)
  analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grad),
                                                jax.tree.leaves(direction)))
  h = 1e-3
  shifted = lambda s: jax.tree.map(lambda p, d: p + s * h * d, params, direction)
  numeric = (f(shifted(1.0)) - f(shifted(-1.0))) / (2 * h)
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2, atol=1e-3)


def _gradients(estimator, n=2000, k=50):
  """Per-replica gradients of the loss, flattened per part: ({'enc': [n, P], 'dec': ...})."""
  batch, keys = _replicas(n, seed=11)
  params = _params()

  def one(x, key):
    grad = jax.grad(lambda p: T.loss(MODEL, p, {"image": x[None]}, key[None], "iwae", k,
                                     estimator)[0])(params)
    return {part: jnp.concatenate([g.ravel() for g in jax.tree.leaves(grad[part])])
            for part in grad}
  return jax.tree.map(np.asarray, jax.jit(jax.vmap(one))(batch["image"], keys))


def test_dreg_agrees_in_mean_with_lower_encoder_variance_at_k50():
  plain, dreg = _gradients("reparam"), _gradients("dreg")
  np.testing.assert_allclose(dreg["dec"], plain["dec"], rtol=1e-4, atol=1e-4)  # same for p
  n = len(plain["enc"])
  se = np.sqrt((plain["enc"].var(0) + dreg["enc"].var(0)) / n)
  assert np.all(np.abs(plain["enc"].mean(0) - dreg["enc"].mean(0)) < 5 * se + 1e-6)
  assert dreg["enc"].var(0).sum() < 0.5 * plain["enc"].var(0).sum()


def _config(**objective):
  config = default.get_config()
  config.objective.update(objective)
  return config


@pytest.mark.parametrize("objective, field", [
    ({"name": "iwae", "num_samples": 5, "beta": 0.5}, "objective.beta"),
    ({"name": "k_sample_elbo", "num_samples": 5, "warmup_steps": 10}, "objective.warmup_steps"),
    ({"name": "iwae", "num_samples": 5, "free_bits": 0.1}, "objective.free_bits"),
    ({"name": "elbo", "num_samples": 5}, "objective.num_samples"),
    ({"name": "k_sample_elbo", "num_samples": 5, "gradient_estimator": "dreg"},
     "objective.gradient_estimator"),
    ({"name": "iwea"}, "objective.name"),
])
def test_nonsense_combinations_are_refused_naming_the_field(objective, field):
  with pytest.raises(checks.ConfigError, match=rf"config\.{field}="):
    T.validate(_config(**objective), MODEL)


def test_dreg_needs_the_capability():
  class NoCapability:
    def log_weights(self, params, batch, keys):
      raise AssertionError
  config = _config(name="iwae", num_samples=5, gradient_estimator="dreg")
  T.validate(config, MODEL)
  with pytest.raises(checks.ConfigError, match="lacks log_weights_stopped_posterior"):
    T.validate(config, NoCapability())


def test_a_run_recorded_before_the_objective_fields_resumes_unchanged(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from vae_jax.training import workdir  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  recorded = workdir.config_dict(config)
  for field in T.ADDED_FIELDS:
    group, key = field.split(".")
    del recorded[group][key]
  (tmp_path / workdir.CONFIG_FILE).write_text(json.dumps(recorded))
  assert workdir.prepare(str(tmp_path), config) == {}   # nothing changed: it may resume
  config.objective.name, config.objective.num_samples = "iwae", 5
  with pytest.raises(workdir.WorkdirError, match="objective.name"):
    workdir.prepare(str(tmp_path), config)


def test_the_dreg_methods_are_the_interfaces():
  from vae_jax.models import interface  # pylint: disable=g-import-not-at-top
  assert T.DREG_METHODS == interface.DREG_METHODS


def test_k_sample_objectives_refuse_discrete_codes():
  class Discrete:
    reparameterized_log_weights = False
  with pytest.raises(checks.ConfigError, match="objective.name.*discrete codes"):
    T.validate(_config(name="iwae", num_samples=5), Discrete())
  T.validate(_config(name="elbo", num_samples=1), Discrete())  # the ELBO trains as before
