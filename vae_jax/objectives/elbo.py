"""The ELBO and the training loss built on it, as pure functions.

``elbo_terms`` returns every term per example, in nats:
  elbo        = log p(x|z) - KL(q(z|x) || p(z))       (a lower bound on log p(x))
  rate        = KL(q(z|x) || N(0, I))                 (analytic or 1-sample MC)
  distortion  = -log p(x|z)                           (1 sample of z ~ q)
  kl_per_dim  = the rate split over latent dimensions
plus ``bits_per_dim`` for continuous likelihoods. Training, evaluation and
result tables all read these same numbers.

``training_loss`` turns a batch of terms into distortion + beta * rate, with KL
warm-up and free bits (Kingma et al. 2016, "Improved variational inference with
inverse autoregressive flow", Sec. C.8) against posterior collapse.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from vae_jax.core import distributions as D
from vae_jax.core import likelihoods
from vae_jax.models import gaussian_vae as models

KL_ESTIMATORS = ("analytic", "mc")
Terms = dict[str, jax.Array]


def elbo_terms(mean: jax.Array, logvar: jax.Array,
               log_likelihood: Callable[[jax.Array], jax.Array], keys: jax.Array,
               kl_estimator: str = "analytic") -> Terms:
  """Per-example ELBO terms for any q = N(mean, exp(logvar)) and any p(x|z).

  Args:
    mean, logvar: [B, latent_dim] parameters of q(z|x).
    log_likelihood: z [B, latent_dim] -> log p(x|z) [B].
    keys: [B] per-example keys for the reparameterized z = mean + sigma * eps.
    kl_estimator: "analytic" (closed form) or "mc" (log q(z|x) - log p(z) at z).
  """
  z = D.reparameterize(keys, mean, logvar)
  log_px_z = log_likelihood(z)
  if kl_estimator == "analytic":
    kl_per_dim = D.kl_to_standard_normal_per_dim(mean, logvar)
  else:
    kl_per_dim = D.kl_monte_carlo_per_dim(z, mean, logvar)
  rate = jnp.sum(kl_per_dim, axis=-1)
  return {"elbo": log_px_z - rate, "rate": rate, "distortion": -log_px_z,
          "kl_per_dim": kl_per_dim}


def log_likelihood_fn(model: models.VAE, params: dict,
                      x: jax.Array) -> Callable[[jax.Array], jax.Array]:
  """z [B, latent_dim] -> log p(x|z) [B] in nats, for the images x [B, H, W, C]."""
  def log_likelihood(z):
    loc, log_scale = models.decode(model, params, z, x)  # x: teacher forcing, if autoregressive
    return likelihoods.log_prob(model.likelihood, x, loc, log_scale)
  return log_likelihood


def vae_terms(model: models.VAE, params: dict, x: jax.Array, keys: jax.Array,
              kl_estimator: str = "analytic") -> Terms:
  """``elbo_terms`` for a VAE on images x [B, H, W, C], plus q's mean and logvar."""
  mean, logvar = models.encode(model, params, x)
  terms = elbo_terms(mean, logvar, log_likelihood_fn(model, params, x), keys, kl_estimator)
  terms["posterior_mean"], terms["posterior_logvar"] = mean, logvar
  if likelihoods.is_continuous(model.likelihood):
    terms["bits_per_dim"] = likelihoods.bits_per_dim(
        -terms["elbo"], math.prod(model.image_shape))
  return terms


def beta_at(step: jax.Array, beta: float, warmup_steps: int) -> jax.Array:
  """KL warm-up: beta ramps linearly from 0 at step 0 to ``beta`` at ``warmup_steps``."""
  if warmup_steps <= 0:
    return jnp.asarray(beta, jnp.float32)
  frac = jnp.minimum(step.astype(jnp.float32) / warmup_steps, 1.0)
  return beta * frac


def free_bits_rate(kl_per_dim: jax.Array, free_bits: float,
                   axis_name: Optional[str] = None) -> jax.Array:
  """sum_d max(lambda, E_batch[KL_d]), with the batch the *global* batch.

  A dimension whose batch-mean KL is below lambda gets no gradient from the rate,
  so the optimizer has no reason to close it. Under data parallelism the floor is
  decided on the global batch mean (``pmean`` over ``axis_name``) while each
  device differentiates its local mean: averaging the devices' gradients then
  gives exactly the gradient of the global objective, on any device count.
  """
  local = jnp.mean(kl_per_dim, axis=0)
  global_mean = jax.lax.pmean(local, axis_name) if axis_name else local
  above = jax.lax.stop_gradient(global_mean) > free_bits
  return jnp.sum(jnp.where(above, local, free_bits))


def training_loss(terms: Terms, beta: jax.Array, free_bits: float,
                  axis_name: Optional[str] = None) -> tuple[jax.Array, dict]:
  """distortion + beta * rate, averaged over the (local) batch; returns metrics too."""
  distortion = jnp.mean(terms["distortion"])
  if free_bits > 0:
    rate_term = free_bits_rate(terms["kl_per_dim"], free_bits, axis_name)
  else:
    rate_term = jnp.mean(terms["rate"])
  loss = distortion + beta * rate_term
  metrics = {"loss": loss, "elbo": jnp.mean(terms["elbo"]),
             "rate": jnp.mean(terms["rate"]), "distortion": distortion, "beta": beta}
  if "bits_per_dim" in terms:
    metrics["bits_per_dim"] = jnp.mean(terms["bits_per_dim"])
  return loss, metrics
