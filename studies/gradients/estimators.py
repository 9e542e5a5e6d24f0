"""Two unbiased estimators of grad_phi E_{q_phi(z)}[f(z)] for a diagonal Gaussian q.

Why the VAE uses the reparameterization trick: both estimators below have the
same expectation, but their variances differ by orders of magnitude.

  pathwise  (reparameterized):  mean_s grad_phi f(mu_phi + sigma_phi * eps_s)
  score     (REINFORCE):        mean_s f(z_s) grad_phi log q_phi(z_s),   z_s ~ q fixed
  score_loo (REINFORCE with the leave-one-out baseline, S >= 2):
                                mean_s (f(z_s) - mean_{j != s} f(z_j)) grad_phi log q_phi(z_s)

Each is written as a *surrogate*: a scalar whose ``jax.grad`` is the estimate,
so one function serves any parameterization of (mean, logvar): the raw
parameters of q (``gaussian_gradient``) or the encoder's weights
(``encoder_gradient``). ``moments`` draws R independent estimates inside one
``lax.scan`` with Welford's update, so the R x num_params estimates are never
stored; ``compare`` and ``summarize`` turn the moments into agreement tests and
variances, and ``distribution_test`` checks that z = mu + sigma * eps is
N(mu, sigma^2) with statistical tests that are shown to have power.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.flatten_util  # pylint: disable=unused-import
import jax.numpy as jnp
import numpy as np
from scipy import stats

from vae_jax.core import distributions as D
from vae_jax.models import interface

ESTIMATORS = ("pathwise", "score", "score_loo")
PyTree = Any


def draw(key: jax.Array, mean: jax.Array, logvar: jax.Array, num_samples: int) -> jax.Array:
  """S reparameterized samples of each row of q: z [S, B, D], one key per (s, b)."""
  batch = mean.shape[0]
  keys = jax.random.split(key, num_samples * batch)
  keys = keys.reshape((num_samples, batch, *keys.shape[1:]))
  return jax.vmap(lambda k: D.reparameterize(k, mean, logvar))(keys)


def surrogate(estimator: str, f: Callable[[jax.Array], jax.Array], mean: jax.Array,
              logvar: jax.Array, key: jax.Array, num_samples: int) -> jax.Array:
  """A scalar whose gradient w.r.t. (mean, logvar) is the estimator's estimate.

  The target is mean_b E_{z ~ N(mean_b, exp(logvar_b))}[f(z)_b]: ``f`` maps
  z [B, D] to per-row values [B] (row b only depends on z_b), as
  a decoder's log-likelihood does. Only the gradient is meaningful for
  the score-function surrogates, not the value.
  """
  if estimator not in ESTIMATORS:
    raise ValueError(f"Unknown estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}.")
  if estimator == "score_loo" and num_samples < 2:
    raise ValueError("score_loo needs num_samples >= 2 (the baseline leaves one sample out).")
  z = draw(key, mean, logvar, num_samples)
  if estimator == "pathwise":
    return jnp.mean(jax.vmap(f)(z))
  z = jax.lax.stop_gradient(z)
  values = jax.lax.stop_gradient(jax.vmap(f)(z))                       # [S, B]
  if estimator == "score_loo":
    values = values - (jnp.sum(values, 0, keepdims=True) - values) / (num_samples - 1)
  log_q = jnp.sum(D.gaussian_log_prob_per_dim(z, mean, logvar), axis=-1)  # [S, B]
  return jnp.mean(values * log_q)


def gaussian_gradient(estimator: str, f: Callable[[jax.Array], jax.Array], mean: jax.Array,
                      logvar: jax.Array, key: jax.Array,
                      num_samples: int) -> tuple[jax.Array, jax.Array]:
  """One estimate of (grad_mean, grad_logvar) of mean_b E_q[f(z)_b]; mean, logvar [B, D]."""
  return jax.grad(lambda m, lv: surrogate(estimator, f, m, lv, key, num_samples),
                  argnums=(0, 1))(mean, logvar)


def encoder_gradient(estimator: str, model: interface.Model, params: dict, x: jax.Array,
                     key: jax.Array, num_samples: int) -> PyTree:
  """One estimate of grad_enc mean_b E_{q(z|x_b)}[log p(x_b|z)] (the reconstruction term).

  For a family with a diagonal-Gaussian ``posterior`` and a decoder
  ``log_likelihood``. The decoder is held fixed; the gradient flows through q's
  mean and logvar into the encoder's parameters ``params['enc']``.
  """
  batch = {"image": x}
  log_likelihood = model.log_likelihood(params, batch)

  def objective(enc):
    q = model.posterior({**params, "enc": enc}, batch)
    return surrogate(estimator, log_likelihood, q.mean, q.logvar, key, num_samples)

  return jax.grad(objective)(params["enc"])


def moments(estimate: Callable[[jax.Array], PyTree], key: jax.Array,
            repetitions: int) -> tuple[PyTree, PyTree]:
  """Mean and unbiased variance, per coordinate, of R = ``repetitions`` estimates.

  ``estimate(key)`` returns one estimate (a pytree). The R estimates are drawn
  in one jitted ``lax.scan`` and folded in with Welford's update (stable in
  float32 even when the mean dwarfs the spread), so memory is that of three
  copies of one estimate, whatever R. Each call compiles its own program.
  """
  if repetitions < 2:
    raise ValueError(f"repetitions={repetitions}: need at least 2 for a variance.")
  return _moments_fn(estimate, repetitions)(key)


def _moments_fn(estimate: Callable[[jax.Array], PyTree], repetitions: int):
  def run(key):
    shapes = jax.eval_shape(estimate, key)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def step(carry, inputs):
      k, count = inputs
      mean, m2 = carry
      g = estimate(k)
      delta = jax.tree.map(jnp.subtract, g, mean)
      mean = jax.tree.map(lambda m, d: m + d / count, mean, delta)
      m2 = jax.tree.map(lambda a, d, x, m: a + d * (x - m), m2, delta, g, mean)
      return (mean, m2), None

    counts = jnp.arange(1, repetitions + 1, dtype=jnp.float32)
    (mean, m2), _ = jax.lax.scan(step, (zeros, zeros),
                                 (jax.random.split(key, repetitions), counts))
    return mean, jax.tree.map(lambda a: a / (repetitions - 1), m2)
  return jax.jit(run)


def with_projections(estimate: Callable[[jax.Array], PyTree],
                     directions: jax.Array) -> Callable[[jax.Array], dict[str, Any]]:
  """``estimate`` plus its components along fixed unit directions [K, num_params].

  Coordinates of a gradient estimate are strongly correlated (the encoder's
  noise enters through B x 2 x latent_dim numbers: each image's d/d(mean,
  logvar)), so per-coordinate z values are not independent tests. A projection
  onto a fixed direction is one scalar whose variance ``moments`` measures
  exactly: a clean z test, one per direction.
  """
  def fn(key):
    g = estimate(key)
    return {"grad": g, "along": directions @ jax.flatten_util.ravel_pytree(g)[0]}
  return fn


def probe_directions(pilot: np.ndarray, num_random: int, seed: int) -> np.ndarray:
  """The pilot gradient's direction, then ``num_random`` random ones (unit, float32)."""
  rng = np.random.default_rng(seed)
  dirs = np.concatenate([pilot[None], rng.normal(size=(num_random, pilot.size))])
  return (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32)


def flat(tree: PyTree) -> np.ndarray:
  """The leaves of a pytree as one float64 host vector (a fixed leaf order)."""
  return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def compare(mean_a: np.ndarray, var_a: np.ndarray, n_a: int, mean_b: np.ndarray,
            var_b: np.ndarray, n_b: int, alpha: float = 0.05,
            keep_z: bool = False) -> dict[str, Any]:
  """Per-coordinate z = (mean_a - mean_b) / sqrt(var_a/n_a + var_b/n_b).

  If both estimators are unbiased for the same gradient, z is about N(0, 1) in
  every coordinate: about 95% fall within +-1.96, and at most alpha of the
  time does any exceed the Bonferroni threshold Phi^-1(1 - alpha / 2P) over the
  P coordinates. Coordinates with zero variance in both (e.g. weights of dead
  ReLU units) are counted apart; there the means must match exactly. The
  coordinates of a gradient are correlated (see ``with_projections``), so the
  fraction is ~95% on average but scatters far more than a binomial would.
  ``keep_z`` adds the z values themselves (for a few projections).
  """
  se2 = var_a / n_a + var_b / n_b
  diff = mean_a - mean_b
  live = se2 > 0
  z = diff[live] / np.sqrt(se2[live])
  threshold = float(stats.norm.isf(alpha / (2 * max(int(live.sum()), 1))))
  out = {"z": [float(v) for v in z]} if keep_z else {}
  return out | {
      "num_coordinates": int(live.size), "num_zero_variance": int((~live).sum()),
      "zero_variance_mismatches": int(np.sum(diff[~live] != 0)),
      "fraction_abs_z_below_1.96": float(np.mean(np.abs(z) < 1.96)) if z.size else None,
      "max_abs_z": float(np.max(np.abs(z))) if z.size else None,
      "bonferroni_threshold": threshold, "num_above_bonferroni": int(np.sum(np.abs(z) > threshold)),
      "mean_z": float(np.mean(z)) if z.size else None,
      "std_z": float(np.std(z)) if z.size else None,
  }


def summarize(mean: np.ndarray, var: np.ndarray, repetitions: int, reference: np.ndarray,
              reference_var_of_mean: np.ndarray) -> dict[str, float]:
  """Total variance and the error of the mean against a high-precision reference.

  total_variance = E||g - E g||^2 of one estimate (summed over coordinates);
  relative_std = sqrt(total_variance) / ||g_ref|| (the noise of one estimate in
  units of the gradient); relative_error = ||mean - g_ref|| / ||g_ref|| and the
  value it should have from noise alone when unbiased:
  sqrt(tr V / R + tr V_ref) / ||g_ref||.
  """
  norm = float(np.linalg.norm(reference))
  total = float(np.sum(var))
  return {
      "total_variance": total,
      "relative_std": float(np.sqrt(total) / norm),
      "relative_error": float(np.linalg.norm(mean - reference) / norm),
      "relative_error_from_noise": float(
          np.sqrt(total / repetitions + np.sum(reference_var_of_mean)) / norm),
  }


def _per_dim_tests(z: np.ndarray, mean: np.ndarray, std: np.ndarray,
                   rng: np.random.Generator) -> dict[str, list[float]]:
  out: dict[str, list[float]] = {"ks": [], "cramervonmises": [], "ks_2samp": []}
  for d in range(z.shape[1]):
    out["ks"].append(stats.kstest(z[:, d], "norm", args=(mean[d], std[d])).pvalue)
    out["cramervonmises"].append(
        stats.cramervonmises(z[:, d], "norm", args=(mean[d], std[d])).pvalue)
    independent = rng.normal(mean[d], std[d], size=len(z))
    out["ks_2samp"].append(stats.ks_2samp(z[:, d], independent).pvalue)
  return out


def distribution_test(mean: np.ndarray, logvar: np.ndarray, key: jax.Array, num_samples: int,
                      seed: int, *, scale_factor: float = 1.0, mean_shift: float = 0.0,
                      alpha: float = 0.05) -> dict[str, Any]:
  """Tests that reparameterized z = mu + sigma * eps follows N(mu, sigma^2).

  Draws ``num_samples`` z per dimension of q = N(mean, exp(logvar)) [D] with
  ``distributions.reparameterize``, from a q whose scale is multiplied by
  ``scale_factor`` and mean moved by ``mean_shift`` sigmas (1 and 0: the claim
  itself; anything else: a wrong q, to show the tests have power), and tests
  them against the exact N(mean, sigma^2): one-sample Kolmogorov-Smirnov and
  Cramer-von Mises with the known parameters, and two-sample KS against
  numpy's independent ``rng.normal(mu, sigma)``. Per dimension (smallest
  p-value, Bonferroni-adjusted over D) and pooled (all n x D standardized
  values against N(0, 1)), combined by Bonferroni; ``rejected`` is at level alpha.
  """
  mean = np.asarray(mean, np.float32).ravel()
  logvar = np.asarray(logvar, np.float32).ravel()
  dims = mean.size
  std = np.exp(0.5 * logvar.astype(np.float64))
  drawn_mean = mean + mean_shift * np.exp(0.5 * logvar)
  drawn_logvar = logvar + 2.0 * np.log(scale_factor)
  keys = jax.random.split(key, num_samples)
  z = D.reparameterize(keys, jnp.broadcast_to(drawn_mean, (num_samples, dims)),
                       jnp.broadcast_to(drawn_logvar, (num_samples, dims)))
  z = np.asarray(z, np.float64)
  rng = np.random.default_rng(seed)
  per_dim = _per_dim_tests(z, mean.astype(np.float64), std, rng)
  standardized = ((z - mean.astype(np.float64)) / std).ravel()
  independent = rng.normal(size=standardized.size)
  pooled = {"ks": stats.kstest(standardized, "norm"),
            "cramervonmises": stats.cramervonmises(standardized, "norm"),
            "ks_2samp": stats.ks_2samp(standardized, independent)}
  out: dict[str, Any] = {"num_samples": num_samples, "num_dims": dims,
                         "scale_factor": scale_factor, "mean_shift_in_sigmas": mean_shift,
                         "alpha": alpha}
  for name, result in pooled.items():
    p_dims = np.asarray(per_dim[name])
    out[name] = {
        "pooled_statistic": float(result.statistic), "pooled_pvalue": float(result.pvalue),
        "min_pvalue_per_dim": float(p_dims.min()),
        "bonferroni_pvalue_per_dim": float(min(1.0, p_dims.min() * dims)),
        "dims_below_alpha": int(np.sum(p_dims < alpha)),
    }
    # Two looks at the same data (pooled, per dimension): Bonferroni over both.
    out[name]["combined_pvalue"] = float(min(
        1.0, 2 * min(out[name]["pooled_pvalue"], out[name]["bonferroni_pvalue_per_dim"])))
    out[name]["rejected"] = out[name]["combined_pvalue"] < alpha
  return out
