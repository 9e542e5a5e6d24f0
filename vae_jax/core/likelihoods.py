"""The observation model p(x|z): Bernoulli for binary data, Gaussian for continuous data.

The decoder emits a location (Bernoulli logits or Gaussian mean) and, for the
Gaussian, a log-scale that is either a fixed constant or a learned per-pixel
parameter. These functions turn those outputs into per-example log p(x|z).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from vae_jax.core import distributions as D

LIKELIHOODS = ("bernoulli", "gaussian_fixed", "gaussian_learned")
# Data of 8-bit images is dequantized onto [0, 1] in 256 bins; a continuous
# density's log-likelihood then converts to a discrete one by -D * log(256).
LOG_NUM_BINS = math.log(256.0)


def is_continuous(likelihood: str) -> bool:
  return likelihood != "bernoulli"


def log_prob(likelihood: str, x: jax.Array, loc: jax.Array,
             log_scale: Optional[jax.Array]) -> jax.Array:
  """Per-example log p(x|z) in nats, summed over the image axes (H, W, C).

  The image axes are flattened first: a [..., 28, 28, 1] layout (channels last,
  one channel) leaves XLA's CPU backend a minor axis of size 1 and unvectorized
  loops, several times slower over the IWAE bound's millions of pixels.
  """
  flat = lambda a: a.reshape((*a.shape[:-3], -1))
  x, loc = flat(x), flat(loc)
  if likelihood == "bernoulli":
    per_dim = D.bernoulli_log_prob_per_dim(x, loc)
  else:
    per_dim = D.gaussian_log_prob_per_dim(x, loc, 2.0 * flat(log_scale))
  return jnp.sum(per_dim, axis=-1)


def mean(likelihood: str, loc: jax.Array) -> jax.Array:
  """E[x|z] clipped to [0, 1]: what reconstructions and samples show."""
  if likelihood == "bernoulli":
    return jax.nn.sigmoid(loc)
  return jnp.clip(loc, 0.0, 1.0)


def bits_per_dim(nll_nats: jax.Array, num_dims: int) -> jax.Array:
  """Bits per dimension of 8-bit data from a continuous density's NLL in nats.

  The density lives on dequantized pixels (x + u) / 256, so the discrete NLL is
  the continuous one plus num_dims * log(256) (Theis et al. 2016).
  """
  return (nll_nats + num_dims * LOG_NUM_BINS) / (num_dims * math.log(2.0))
