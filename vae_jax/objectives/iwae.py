"""The importance-weighted bound (Burda et al. 2015): honest log-likelihoods.

  log p_k(x) = logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k,  z_i ~ q(z|x)

is a lower bound on log p(x) in expectation that tightens as k grows; with
k = 5,000 it is the standard NLL estimate of VAE papers. Its only input is a
family's log-weights (``Model.log_weights``). Samples are processed in chunks
with a running log-sum-exp (``lax.scan``), so memory is bounded by the chunk
size whatever k is. Sample j of example i is drawn from the key (example key,
j): chunked and unchunked estimates use identical samples.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from vae_jax.core import distributions as D

LogWeights = Callable[[jax.Array], jax.Array]


def log_px(log_weights: LogWeights, num_samples: int, chunk_size: int) -> jax.Array:
  """Per-example IWAE estimate of log p(x) [B], in nats.

  Args:
    log_weights: sample ids [c] -> log p(x, z_j) - log q(z_j|x) [B, c].
    num_samples: k.
    chunk_size: samples per chunk; memory grows with B * chunk_size.
  """
  chunk_size = min(chunk_size, num_samples)
  num_chunks = math.ceil(num_samples / chunk_size)

  def chunk(acc, index):
    sample_ids = index * chunk_size + jnp.arange(chunk_size)
    log_w = log_weights(sample_ids)
    log_w = jnp.where(sample_ids < num_samples, log_w, -jnp.inf)   # the last chunk's excess
    return jnp.logaddexp(acc, jax.nn.logsumexp(log_w, axis=1)), None

  first = jax.eval_shape(log_weights, jnp.arange(1))
  init = jnp.full(first.shape[:1], -jnp.inf, first.dtype)
  acc, _ = jax.lax.scan(chunk, init, jnp.arange(num_chunks))
  return acc - math.log(num_samples)


def gaussian_log_weights(q: D.DiagonalGaussian, log_likelihood: Callable[[jax.Array], jax.Array],
                         keys: jax.Array, stop_posterior: bool = False,
                         latent_mask: Optional[jax.Array] = None) -> LogWeights:
  """Log-weights for a diagonal-Gaussian q(z|x) [B, d] and the N(0, I) prior.

  ``log_likelihood``: z [B, c, d] -> log p(x|z) [B, c]; ``keys``: [B] per example.
  ``stop_posterior``: score log q(z|x) with q's parameters stop-gradiented (the
  draws z still carry them): what the DReG estimator differentiates.
  ``latent_mask``: [d] of 0/1, the units in use (a population's padded member): the
  others are left out of log q and log p(z), and their codes are 0.
  """
  scored = (jax.lax.stop_gradient(q) if stop_posterior else q).expand_samples()

  def log_weights(sample_ids: jax.Array) -> jax.Array:
    z = q.sample_indexed(keys, sample_ids)                          # [B, c, d]
    if latent_mask is not None:
      z = z * latent_mask
      log_pz_q = (D.standard_normal_log_prob_per_dim(z) -
                  D.gaussian_log_prob_per_dim(z, scored.mean, scored.logvar))
      return log_likelihood(z) + jnp.sum(log_pz_q * latent_mask, -1)
    log_pz = jnp.sum(D.standard_normal_log_prob_per_dim(z), -1)
    return log_likelihood(z) + log_pz - scored.log_prob(z)
  return log_weights


def bound(log_w: jax.Array) -> jax.Array:
  """log (1/k) sum_i exp(log_w_i) over the last axis: the k-sample IWAE bound of one draw.

  ``log_w`` [B, k] in nats; log-sum-exp keeps it finite when the weights are
  exp(-100s), as they are for images.
  """
  return jax.nn.logsumexp(log_w, axis=-1) - math.log(log_w.shape[-1])
