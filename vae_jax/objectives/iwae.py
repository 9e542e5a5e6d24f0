"""The importance-weighted bound (Burda et al. 2015): honest log-likelihoods.

  log p_k(x) = logsumexp_i [log p(x|z_i) + log p(z_i) - log q(z_i|x)] - log k,  z_i ~ q(z|x)

is a lower bound on log p(x) in expectation that tightens as k grows; with
k = 5,000 it is the standard NLL estimate of VAE papers. Samples are processed
in chunks with a running log-sum-exp (``lax.scan``), so memory is bounded by
the chunk size whatever k is. Sample j of example i is drawn from the key
(example key, j): chunked and unchunked estimates use identical samples.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from vae_jax.core import distributions as D
from vae_jax.core import likelihoods
from vae_jax.models import gaussian_vae as models


def iwae_log_px(mean: jax.Array, logvar: jax.Array,
                log_likelihood: Callable[[jax.Array], jax.Array], keys: jax.Array,
                num_samples: int, chunk_size: int) -> jax.Array:
  """Per-example IWAE estimate of log p(x) [B], in nats.

  Args:
    mean, logvar: [B, latent_dim] parameters of q(z|x).
    log_likelihood: z [B, c, latent_dim] -> log p(x|z) [B, c].
    keys: [B] per-example keys.
    num_samples: k.
    chunk_size: samples per chunk; memory grows with B * chunk_size.
  """
  chunk_size = min(chunk_size, num_samples)
  num_chunks = math.ceil(num_samples / chunk_size)
  std = jnp.exp(0.5 * logvar)[:, None]
  draw = jax.vmap(jax.vmap(lambda key, j: jax.random.normal(
      jax.random.fold_in(key, j), mean.shape[-1:], mean.dtype), (None, 0)), (0, None))

  def chunk(acc, index):
    sample_ids = index * chunk_size + jnp.arange(chunk_size)
    z = mean[:, None] + std * draw(keys, sample_ids)               # [B, c, latent_dim]
    log_pz = jnp.sum(D.standard_normal_log_prob_per_dim(z), -1)
    log_qz = jnp.sum(D.gaussian_log_prob_per_dim(z, mean[:, None], logvar[:, None]), -1)
    log_w = log_likelihood(z) + log_pz - log_qz
    log_w = jnp.where(sample_ids < num_samples, log_w, -jnp.inf)   # the last chunk's excess
    return jnp.logaddexp(acc, jax.nn.logsumexp(log_w, axis=1)), None

  init = jnp.full(mean.shape[:1], -jnp.inf, mean.dtype)
  acc, _ = jax.lax.scan(chunk, init, jnp.arange(num_chunks))
  return acc - math.log(num_samples)


def vae_iwae_log_px(model: models.VAE, params: dict, x: jax.Array, mean: jax.Array,
                    logvar: jax.Array, keys: jax.Array, num_samples: int,
                    chunk_size: int) -> jax.Array:
  """``iwae_log_px`` for a VAE on images x [B, H, W, C] with q(z|x) = N(mean, exp(logvar))."""

  def log_likelihood(z):
    if model.decoder == "autoregressive":  # z [B, c, d] and x [B, 1, ...] broadcast inside
      loc, _ = models.decode(model, params, z, x[:, None])
      return likelihoods.log_prob(model.likelihood, x[:, None], loc, None)
    batch, samples, latent = z.shape
    loc, log_scale = models.decode(model, params, z.reshape(batch * samples, latent))
    unflat = lambda a: None if a is None else a.reshape((batch, samples, *a.shape[1:]))
    return likelihoods.log_prob(model.likelihood, x[:, None], unflat(loc),
                                unflat(log_scale))

  return iwae_log_px(mean, logvar, log_likelihood, keys, num_samples, chunk_size)
