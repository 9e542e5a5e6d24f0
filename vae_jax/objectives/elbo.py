"""The ELBO's per-example terms and the training loss built on them, as pure functions.

``gaussian_elbo_terms`` gives every term per example, in nats, for any
diagonal-Gaussian q(z|x), the N(0, I) prior and any p(x|z):
  elbo        = log p(x|z) - KL(q(z|x) || p(z))       (a lower bound on log p(x))
  rate        = KL(q(z|x) || N(0, I))                 (analytic or 1-sample MC)
  distortion  = -log p(x|z)                           (1 sample of z ~ q)
  kl_per_dim  = the rate split over latent dimensions
Families with such a q build their ``terms`` on it; studies use it with a q of
their own (per-point SVI).

``training_loss`` turns any family's batch of terms into distortion + beta *
rate, with KL warm-up and free bits (Kingma et al. 2016, "Improved variational
inference with inverse autoregressive flow", Sec. C.8) against posterior collapse.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from vae_jax import parallel
from vae_jax.core import distributions as D
from vae_jax.core import likelihoods

Terms = dict[str, jax.Array]
# Terms that are not per-example scalars to average into metrics.
NOT_REPORTED = ("kl_per_dim", "posterior", "latent_groups")


def gaussian_elbo_terms(q: D.DiagonalGaussian, log_likelihood: Callable[[jax.Array], jax.Array],
                        keys: jax.Array, kl_estimator: str = "analytic") -> Terms:
  """Per-example ELBO terms for q = N(mean, exp(logvar)) [B, d] and any p(x|z).

  Args:
    q: the posterior of each example.
    log_likelihood: z [B, d] -> log p(x|z) [B].
    keys: [B] per-example keys for the reparameterized z = mean + sigma * eps.
    kl_estimator: "analytic" (closed form) or "mc" (log q(z|x) - log p(z) at z).
  """
  z = q.sample(keys)
  log_px_z = log_likelihood(z)
  kl_per_dim = q.kl_per_dim() if kl_estimator == "analytic" else q.kl_per_dim(z)
  rate = jnp.sum(kl_per_dim, axis=-1)
  return {"elbo": log_px_z - rate, "rate": rate, "distortion": -log_px_z,
          "kl_per_dim": kl_per_dim}


def add_bits_per_dim(terms: Terms, num_dims: int) -> Terms:
  """Adds ``bits_per_dim`` of -elbo: for continuous densities of dequantized 8-bit data."""
  return {**terms, "bits_per_dim": likelihoods.bits_per_dim(-terms["elbo"], num_dims)}


def beta_at(step: jax.Array, beta: float | jax.Array,
            warmup_steps: int | jax.Array) -> jax.Array:
  """KL warm-up: beta ramps linearly from 0 at step 0 to ``beta`` at ``warmup_steps``.

  ``warmup_steps`` is a constant in a solo run, a traced per-member value in a population
  whose members warm up differently (0: no warm-up either way).
  """
  if isinstance(warmup_steps, (int, float)):
    if warmup_steps <= 0:
      return jnp.asarray(beta, jnp.float32)
    frac = jnp.minimum(step.astype(jnp.float32) / warmup_steps, 1.0)
    return beta * frac
  frac = jnp.minimum(step.astype(jnp.float32) / jnp.maximum(warmup_steps, 1.0), 1.0)
  return beta * jnp.where(warmup_steps > 0, frac, 1.0)


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
  global_mean = parallel.mean(local, axis_name) if axis_name else local
  above = jax.lax.stop_gradient(global_mean) > free_bits
  return jnp.sum(jnp.where(above, local, free_bits))


def training_loss(terms: Terms, beta: jax.Array, free_bits: float | jax.Array,
                  axis_name: Optional[str] = None) -> tuple[jax.Array, dict]:
  """distortion + beta * rate, averaged over the (local) batch; returns metrics too.

  ``free_bits``: a constant, or a traced per-member floor (a population whose members'
  floors differ: 0 means the plain rate, as the constant 0 does).
  Metrics: the loss, beta, and the batch mean of every per-example term.
  """
  distortion = jnp.mean(terms["distortion"])
  traced = not isinstance(free_bits, (int, float))
  if traced or free_bits > 0:
    if "kl_per_dim" not in terms:
      raise ValueError("objective.free_bits needs the per-dimension KL (terms['kl_per_dim']), "
                       "which this model family does not provide; set it to 0.")
    rate_term = free_bits_rate(terms["kl_per_dim"], free_bits, axis_name)
    if traced:
      rate_term = jnp.where(free_bits > 0, rate_term, jnp.mean(terms["rate"]))
  else:
    rate_term = jnp.mean(terms["rate"])
  loss = distortion + beta * rate_term
  return loss, with_term_means({"loss": loss, "distortion": distortion, "beta": beta}, terms)


def with_term_means(metrics: dict, terms: Terms) -> dict:
  """``metrics`` plus the batch mean of every per-example term they do not have yet: the
  elbo, the rate and any family's own per-example figures."""
  out = dict(metrics)
  for key, value in terms.items():
    if key not in out and key not in NOT_REPORTED and jnp.ndim(value) == 1:
      out[key] = jnp.mean(value)
  return out
