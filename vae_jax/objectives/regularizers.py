"""The disentanglement models' regularizers (Locatello et al. 2019's six), as pure functions.

Each model is the VAE's reconstruction term plus a regularizer of the posterior,
``objective.regularizer``, with the definitions and defaults of
google-research/disentanglement_lib (``methods/unsupervised/vae.py``):

  "beta_vae"      beta * KL                                  (Higgins et al. 2017; today's
                  ELBO path, with KL warm-up and free bits: ``elbo.training_loss``)
  "annealed_vae"  gamma * |KL - C(step)|, C rising linearly to ``c_max`` over
                  ``iteration_threshold`` steps             (Burgess et al. 2018)
  "beta_tc_vae"   KL + (beta - 1) * TC, TC by minibatch-weighted sampling (Chen et al. 2018)
  "factor_vae"    KL + gamma * TC, TC from a discriminator of z against its
                  dimension-wise permutation (Kim & Mnih 2018; objectives/auxiliary.py)
  "dip_vae_i"     KL + lambda_od sum_{i!=j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2,
                  C = Cov[E_q(z|x)]                           (Kumar et al. 2018)
  "dip_vae_ii"    the same with C = Cov_q(z) = Cov[E_q(z|x)] + E[diag Var_q(z|x)]

KL is the batch mean of the rate. Every term but the discriminator's is a function of
the batch, not of each example alone, so on several devices it is computed on the
*global* batch and its gradient, averaged over devices, is the global one exactly
(``of_global_means``; the TC estimator gathers the batch's posteriors): the figures do
not depend on the device count. Each hyperparameter is a constant in a solo run and a
traced per-member scalar in a population (``training/population.HYPER_FIELDS``).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from vae_jax import parallel
from vae_jax.core import distributions as D

REGULARIZERS = ("beta_vae", "annealed_vae", "beta_tc_vae", "factor_vae", "dip_vae_i",
                "dip_vae_ii")
# config field (under objective.) -> its default, disentanglement_lib's fixed values where
# it has one (annealed_vae.gamma 1000, iteration_threshold 100,000; dip_vae_i's
# lambda_d_factor 10).
FIELDS = {"regularizer": "beta_vae", "gamma": 1000.0, "c_max": 25.0,
          "iteration_threshold": 100_000, "lambda_od": 10.0, "lambda_d_factor": 10.0}
# Which fields each regularizer reads (beta: objective.beta).
USES = {"beta_vae": ("beta",), "annealed_vae": ("gamma", "c_max", "iteration_threshold"),
        "beta_tc_vae": ("beta",), "factor_vae": ("gamma",),
        "dip_vae_i": ("lambda_od", "lambda_d_factor"),
        "dip_vae_ii": ("lambda_od", "lambda_d_factor")}

Scalar = float | jax.Array


def of_global_means(f: Callable[[Any], jax.Array], local: Any,
                    axis_name: Optional[str]) -> jax.Array:
  """f(the global batch's means), from this device's means ``local`` (a pytree).

  The value is f at the device mean of ``local``; the gradient is f's gradient there
  times the gradient of the *local* means, so averaging the devices' gradients (as the
  train step does) gives exactly the gradient of f of the global means, on any number
  of devices (the free-bits trick of ``elbo.free_bits_rate``, for any f).
  """
  glob = parallel.mean(local, axis_name) if axis_name else local
  value, slope = jax.value_and_grad(f)(jax.lax.stop_gradient(glob))
  tilt = sum(jnp.vdot(jax.lax.stop_gradient(s), l - jax.lax.stop_gradient(l))
             for s, l in zip(jax.tree.leaves(slope), jax.tree.leaves(local)))
  return value + tilt


def capacity(step: jax.Array, c_max: Scalar, iteration_threshold: Scalar) -> jax.Array:
  """AnnealedVAE's C: min(c_max, c_max * step / iteration_threshold) (``anneal``)."""
  return jnp.minimum(c_max * 1.0, c_max * step.astype(jnp.float32) / iteration_threshold)


def total_correlation(z: jax.Array, mean: jax.Array, logvar: jax.Array,
                      axis_name: Optional[str] = None) -> jax.Array:
  """Minibatch-weighted estimate of TC = KL(q(z) || prod_l q(z_l)), the batch mean.

  q(z_j) is estimated by (1/B) sum_i q(z_j | x_i) over the (global) batch, as
  disentanglement_lib's ``total_correlation`` (which drops the constant
  (d - 1) log(B N): it does not change gradients). ``z``, ``mean``, ``logvar``: this
  device's [b, d]; the other devices' posteriors are gathered, so each local z_j is
  scored against the whole batch. Returns this device's mean over its j.
  """
  all_mean = parallel.gather(mean, axis_name) if axis_name else mean
  all_logvar = parallel.gather(logvar, axis_name) if axis_name else logvar
  log_q = D.gaussian_log_prob_per_dim(z[:, None, :], all_mean[None],
                                      all_logvar[None])  # [j, i, l]: log q(z_j,l | x_i)
  log_q_product = jnp.sum(jax.nn.logsumexp(log_q, axis=1), axis=1)
  log_q_joint = jax.nn.logsumexp(jnp.sum(log_q, axis=2), axis=1)
  return jnp.mean(log_q_joint - log_q_product)


def covariance(moments: dict[str, jax.Array], with_variances: bool) -> jax.Array:
  """Cov[E_q(z|x)] from batch moments (E[mu], E[mu mu^T]); plus E[diag Var_q] for DIP-II."""
  m = moments["mean"]
  cov = moments["outer"] - m[:, None] * m[None, :]
  if with_variances:
    cov = cov + jnp.diag(moments["variance"])
  return cov


def dip_penalty(cov: jax.Array, lambda_od: Scalar, lambda_d: Scalar) -> jax.Array:
  """lambda_od * sum of squared off-diagonal entries + lambda_d * sum (diagonal - 1)^2."""
  diag = jnp.diagonal(cov)
  off = cov - jnp.diag(diag)
  return lambda_od * jnp.sum(jnp.square(off)) + lambda_d * jnp.sum(jnp.square(diag - 1.0))


def regularizer(name: str, hyper: dict[str, Scalar], q: D.DiagonalGaussian, z: jax.Array,
                rate: jax.Array, step: jax.Array, axis_name: Optional[str],
                discriminator_tc: Optional[Callable[[jax.Array], jax.Array]] = None
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """(the regularizer to add to the batch-mean distortion, its metrics).

  ``hyper``: the regularizer's fields (``USES``), constants or traced scalars. ``q``:
  the posterior [b, d]; ``z``: the draws the reconstruction used; ``rate``: per-example KL
  [b]. ``discriminator_tc``: z -> the discriminator's TC estimate per example (factor_vae).
  """
  kl = jnp.mean(rate)
  if name == "annealed_vae":
    c = capacity(step, hyper["c_max"], hyper["iteration_threshold"])
    value = of_global_means(lambda k: hyper["gamma"] * jnp.abs(k - c), kl, axis_name)
    return value, {"capacity": c}
  if name == "beta_tc_vae":
    tc = total_correlation(z, q.mean, q.logvar, axis_name)
    return kl + (hyper["beta"] - 1.0) * tc, {"total_correlation": tc}
  if name == "factor_vae":
    tc = jnp.mean(discriminator_tc(z))
    return kl + hyper["gamma"] * tc, {"total_correlation": tc}
  if name in ("dip_vae_i", "dip_vae_ii"):
    moments = {"mean": jnp.mean(q.mean, axis=0),
               "outer": jnp.mean(q.mean[:, :, None] * q.mean[:, None, :], axis=0),
               "variance": jnp.mean(jnp.exp(q.logvar), axis=0)}
    lambda_d = hyper["lambda_d_factor"] * hyper["lambda_od"]
    penalty = lambda m: dip_penalty(covariance(m, name == "dip_vae_ii"), hyper["lambda_od"],
                                    lambda_d)
    dip = of_global_means(penalty, moments, axis_name)
    return kl + dip, {"dip_penalty": dip}
  raise ValueError(f"objective.regularizer={name!r} is not one of {REGULARIZERS}.")
