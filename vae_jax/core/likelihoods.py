"""Observation models p(x|z) as objects: ``log_prob``, ``mean`` and ``sample``.

A decoder turns codes z [..., d] into one of these for images [..., H, W, C];
everything downstream (the ELBO, the importance weights, pictures) asks the
object, never which decoder made it. Leading axes broadcast: a likelihood for
z [B, c, d] scores x [B, 1, H, W, C], k codes of an example against one copy.

- ``Bernoulli``: binary pixels, from logits.
- ``Gaussian``: continuous pixels (dequantized 8-bit data on [0, 1]), from a mean
  and a log-scale (fixed or learned by the model that builds it).
- ``Autoregressive``: p(x|z) = prod_i p(x_i | x_<i, z), whose logits depend on x
  itself: ``log_prob`` scores with teacher forcing, ``sample`` draws pixel by
  pixel; E[x|z] is intractable, so ``mean`` shows p(x_i = 1 | x_<i, z) along one
  draw.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import flax
import jax
import jax.numpy as jnp

from vae_jax.core import distributions as D

# Data of 8-bit images is dequantized onto [0, 1] in 256 bins; a continuous
# density's log-likelihood then converts to a discrete one by -D * log(256).
LOG_NUM_BINS = math.log(256.0)


def _flat(a: jax.Array) -> jax.Array:
  """[..., H, W, C] -> [..., H * W * C].

  A [..., 28, 28, 1] layout (channels last, one channel) leaves XLA's CPU
  backend a minor axis of size 1 and unvectorized loops, several times slower
  over the IWAE bound's millions of pixels.
  """
  return a.reshape((*a.shape[:-3], -1))


@flax.struct.dataclass
class Bernoulli:
  """Independent Bernoulli pixels with these logits [..., H, W, C]."""
  logits: jax.Array

  def log_prob(self, x: jax.Array) -> jax.Array:
    """Per-example log p(x|z) in nats, summed over the image axes."""
    return jnp.sum(D.bernoulli_log_prob_per_dim(_flat(x), _flat(self.logits)), axis=-1)

  def mean(self, rng: Optional[jax.Array] = None) -> jax.Array:
    del rng  # exact
    return jax.nn.sigmoid(self.logits)

  def sample(self, rng: jax.Array) -> jax.Array:
    return jax.random.bernoulli(rng, jax.nn.sigmoid(self.logits)).astype(jnp.float32)


@flax.struct.dataclass
class Gaussian:
  """Independent Gaussian pixels N(loc, exp(log_scale)^2), each [..., H, W, C]."""
  loc: jax.Array
  log_scale: jax.Array

  def log_prob(self, x: jax.Array) -> jax.Array:
    return jnp.sum(D.gaussian_log_prob_per_dim(_flat(x), _flat(self.loc),
                                               2.0 * _flat(self.log_scale)), axis=-1)

  def mean(self, rng: Optional[jax.Array] = None) -> jax.Array:
    """E[x|z] clipped to [0, 1]: what reconstructions and samples show."""
    del rng
    return jnp.clip(self.loc, 0.0, 1.0)

  def sample(self, rng: jax.Array) -> jax.Array:
    """The mean plus per-pixel noise, clipped to [0, 1]."""
    noise = jax.random.normal(rng, self.loc.shape) * jnp.exp(self.log_scale)
    return jnp.clip(self.loc + noise, 0.0, 1.0)


@flax.struct.dataclass
class Autoregressive:
  """Binary pixels in raster order, each conditioned on the ones before it.

  ``score``: x -> Bernoulli of the teacher-forced logits given x;
  ``draw``: rng -> (x ~ p(x|z), p(x_i = 1 | x_<i, z) along that x).
  Both close over the decoder's parameters and z.
  """
  score: Callable[[jax.Array], Bernoulli] = flax.struct.field(pytree_node=False)
  draw: Callable[[jax.Array], tuple[jax.Array, jax.Array]] = flax.struct.field(
      pytree_node=False)

  def log_prob(self, x: jax.Array) -> jax.Array:
    return self.score(x).log_prob(x)

  def mean(self, rng: Optional[jax.Array] = None) -> jax.Array:
    """p(x_i = 1 | x_<i, z) along one draw (key 0 unless given: reproducible pictures)."""
    return self.draw(jax.random.PRNGKey(0) if rng is None else rng)[1]

  def sample(self, rng: jax.Array) -> jax.Array:
    return self.draw(rng)[0]


Likelihood = Bernoulli | Gaussian | Autoregressive


def bits_per_dim(nll_nats: jax.Array, num_dims: int) -> jax.Array:
  """Bits per dimension of 8-bit data from a continuous density's NLL in nats.

  The density lives on dequantized pixels (x + u) / 256, so the discrete NLL is
  the continuous one plus num_dims * log(256) (Theis et al. 2016).
  """
  return (nll_nats + num_dims * LOG_NUM_BINS) / (num_dims * math.log(2.0))
