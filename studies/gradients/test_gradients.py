"""Pathwise vs score-function gradients: closed forms, agreement, variance, the z test."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studies.gradients import config as gradients_config
from tests.conftest import make_config
from vae_jax.data import datasets
from studies.gradients import estimators as E
from vae_jax.evaluation import evaluator as evaluation
from studies.gradients import study as gradient_study
from vae_jax import models
from vae_jax import validation
from vae_jax.training import workdir as workdir_lib

C = jnp.array([0.5, -1.0, 2.0])
MEAN = jnp.array([[0.3, 0.2, -0.4]])
LOGVAR = jnp.array([[0.0, -1.0, 0.5]])


def quadratic(z):
  return jnp.sum(jnp.square(z - C), axis=-1)


@pytest.mark.parametrize("estimator", E.ESTIMATORS)
def test_quadratic_means_match_closed_form_and_pathwise_has_lower_variance(estimator):
  # E f = sum (mu - c)^2 + sigma^2: d/dmu = 2 (mu - c), d/dlogvar = sigma^2.
  reps, samples = 3000, 4
  est = lambda k: E.gaussian_gradient(estimator, quadratic, MEAN, LOGVAR, k, samples)
  mean, var = E.moments(est, jax.random.PRNGKey(1), reps)
  for got, v, want in zip(mean, var, (2 * (MEAN - C), jnp.exp(LOGVAR))):
    np.testing.assert_array_less(np.abs(got - want), 4 * np.sqrt(v / reps))
  if estimator != "pathwise":
    path = lambda k: E.gaussian_gradient("pathwise", quadratic, MEAN, LOGVAR, k, samples)
    _, path_var = E.moments(path, jax.random.PRNGKey(2), reps)
    for p, s in zip(path_var, var):
      np.testing.assert_array_less(p, s)
    # Pathwise per-sample variance of d/dmu is Var[2 (z - c)] = 4 sigma^2, over S samples.
    np.testing.assert_allclose(path_var[0], 4 * jnp.exp(LOGVAR) / samples, rtol=0.1)


def test_score_variance_matches_closed_form_and_falls_as_one_over_samples():
  # f(z) = a.z = m + sum_j a_j sigma_j eps_j with m = a.mu. One sample's score
  # estimate is f(z) eps_d / sigma_d for mu_d and f(z) (eps_d^2 - 1) / 2 for
  # logvar_d (both of mean 0 and 0 here: a_d, and E f does not depend on sigma),
  # of variances (m^2 + T + a_d^2 sigma_d^2) / sigma_d^2 and (m^2 + T + 4 a_d^2
  # sigma_d^2) / 2, T = sum_j a_j^2 sigma_j^2: every dimension's noise enters
  # every coordinate. S samples divide both by S.
  a = jnp.array([1.0, -2.0, 0.5])
  linear = lambda z: z @ a
  sigma2 = jnp.exp(LOGVAR)
  m2_plus_t = jnp.sum(a * MEAN) ** 2 + jnp.sum(a**2 * sigma2)
  exact = ((m2_plus_t + a**2 * sigma2) / sigma2, (m2_plus_t + 4 * a**2 * sigma2) / 2)
  for samples in (1, 10):
    est = lambda k, s=samples: E.gaussian_gradient("score", linear, MEAN, LOGVAR, k, s)
    _, var = E.moments(est, jax.random.PRNGKey(samples), 50_000)
    for got, want in zip(var, exact):
      np.testing.assert_allclose(got, want / samples, rtol=0.1)


def test_moments_equal_numpy_mean_and_variance():
  est = lambda k: {"a": 3.0 + jax.random.normal(k, (4,)), "b": jax.random.uniform(k, (2, 2))}
  mean, var = E.moments(est, jax.random.PRNGKey(0), 50)
  draws = [est(k) for k in jax.random.split(jax.random.PRNGKey(0), 50)]
  for name in ("a", "b"):
    stacked = np.stack([np.asarray(d[name]) for d in draws])
    np.testing.assert_allclose(mean[name], stacked.mean(0), rtol=1e-5)
    np.testing.assert_allclose(var[name], stacked.var(0, ddof=1), rtol=1e-4)


def test_compare_accepts_equal_means_and_flags_a_bias():
  rng = np.random.default_rng(0)
  reps, n = 100, 20_000
  var = rng.uniform(0.5, 2.0, n)
  mean_a = rng.normal(0, np.sqrt(var / reps))
  mean_b = rng.normal(0, np.sqrt(var / reps))
  same = E.compare(mean_a, var, reps, mean_b, var, reps)
  assert abs(same["fraction_abs_z_below_1.96"] - 0.95) < 0.01
  assert same["num_above_bonferroni"] == 0
  biased = E.compare(mean_a + 1.0, var, reps, mean_b, var, reps)
  assert biased["fraction_abs_z_below_1.96"] < 0.1


def test_vae_encoder_estimators_agree_with_each_other_and_a_reference():
  config = make_config(model__latent_dim=4, model__width=32)
  data = datasets.load("digits")
  x = evaluation.eval_inputs(data.test[:8], np.arange(8), "dynamic", 0)
  model = models.build(config, data.info)
  params = model.init(jax.random.PRNGKey(0))
  gradient = lambda e, s: lambda k: E.encoder_gradient(e, model, params, x, k, s)
  num_params = sum(v.size for v in jax.tree.leaves(params["enc"]))
  directions = E.probe_directions(np.random.default_rng(1).normal(size=num_params), 4, 0)
  runs = {}
  for i, (estimator, samples, reps) in enumerate(
      [("pathwise", 100, 100), ("pathwise", 4, 300), ("score", 4, 300), ("score_loo", 4, 300)]):
    mean, var = E.moments(E.with_projections(gradient(estimator, samples), directions),
                          jax.random.PRNGKey(i), reps)
    assert jax.tree.structure(mean["grad"]) == jax.tree.structure(params["enc"])
    np.testing.assert_allclose(mean["along"], directions @ E.flat(mean["grad"]), rtol=1e-4,
                               atol=1e-5)
    runs[(estimator, samples)] = (mean, var, reps)
  ref_mean, ref_var, ref_reps = runs.pop(("pathwise", 100))
  path_mean, path_var, path_reps = runs[("pathwise", 4)]
  for key, (mean, var, reps) in runs.items():
    others = [(ref_mean, ref_var, ref_reps)]
    if key[0] != "pathwise":
      others.append((path_mean, path_var, path_reps))
      assert E.flat(var["grad"]).sum() > 2 * E.flat(path_var["grad"]).sum(), key
    for o_mean, o_var, o_reps in others:
      # Along fixed directions: exact scalar z tests. Per coordinate: correlated, so loose.
      along = E.compare(mean["along"], var["along"], reps, o_mean["along"], o_var["along"], o_reps)
      assert along["max_abs_z"] < 4, key
      coords = E.compare(E.flat(mean["grad"]), E.flat(var["grad"]), reps,
                         E.flat(o_mean["grad"]), E.flat(o_var["grad"]), o_reps)
      assert coords["fraction_abs_z_below_1.96"] > 0.8, key
      assert coords["zero_variance_mismatches"] == 0, key
    summary = E.summarize(E.flat(mean["grad"]), E.flat(var["grad"]), reps, E.flat(ref_mean["grad"]),
                          E.flat(ref_var["grad"]) / ref_reps)
    assert summary["relative_error"] < 2 * summary["relative_error_from_noise"], key


def test_reparameterized_samples_pass_and_wrong_ones_fail_the_distribution_test():
  mean, logvar = np.array([0.3, -1.0]), np.array([0.0, -2.0])
  test = lambda **kw: E.distribution_test(mean, logvar, jax.random.PRNGKey(3), 20_000, 0, **kw)
  right = test()
  assert not any(right[t]["rejected"] for t in ("ks", "cramervonmises", "ks_2samp"))
  for wrong in (test(scale_factor=1.1), test(mean_shift=0.1)):
    assert all(wrong[t]["rejected"] for t in ("ks", "cramervonmises", "ks_2samp"))


def test_study_config_is_validated_and_outputs_are_never_replaced(tmp_path):
  gradient_study.validate(gradients_config.get_config())
  for field, value in [("sample_counts", (10, 1)), ("repetitions", (5, 5)),
                       ("estimators", ("score",)), ("num_images", 0)]:
    config = gradients_config.get_config()
    config[field] = value
    with pytest.raises(validation.ConfigError, match=f"config.{field}="):
      gradient_study.validate(config)
  (tmp_path / "gradients.md").write_text("mine")
  with pytest.raises(workdir_lib.WorkdirError, match="gradients.md"):
    gradient_study.check_outputs(str(tmp_path))
