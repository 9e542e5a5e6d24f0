"""A VAE with categorical latents trained through the Gumbel-softmax / Concrete relaxation.

Jang et al. 2017 ("Categorical reparameterization with Gumbel-softmax") and
Maddison et al. 2017 ("The Concrete distribution"): z is N independent
categorical variables of K classes, q(z|x) = prod_n Cat(softmax(logits_n(x))),
the prior uniform. A discrete z has no reparameterization gradient, so training
decodes a *relaxed* sample y = softmax((logits + g) / tau), g ~ Gumbel, a point
of the simplex, and anneals the temperature tau = max(min_temperature,
initial_temperature * exp(-anneal_rate * step)) (Jang et al.'s schedule): low
tau makes y nearly one-hot (less bias) but its gradient noisier. With
``straight_through`` the decoder sees the one-hot argmax of y and the gradient
is y's.

The relaxed objective is not a bound on log p(x) of the discrete model, so the
figures the evaluation reports are computed with *discrete* z ~ q: ``terms``
is the ELBO log p(x|z) - KL(q || Uniform) at one exact draw (the KL in closed
form), and ``log_weights`` importance-samples discrete codes, log p(x|z) +
log p(z) - log q(z|x) with log p(z) = -N log K: a valid IWAE bound. Only the
trainer sees the relaxation, through the optional ``training_terms`` (the
step gives the temperature), which reports its ``temperature`` as a metric.

Config (``config.model``, with ``name = "gumbel_vae"``):
  num_latents, categories   N and K (Jang et al.: 30 x 10)
  width, depth, activation  the MLP encoder (to N x K logits) and decoder
  initial_temperature, min_temperature, anneal_rate   the schedule above
  straight_through          hard one-hot samples forward (bool)
Pixels are Bernoulli (binary data, or grayscale binarized dynamically).

Codes are the flattened one-hot vectors [N * K]; ``encode`` gives their mean
(the class probabilities) and ``decode`` accepts any point of the simplices.
``latent_dim`` is None: the continuous-latent pictures (traversals in prior
standard deviations, spherical interpolation) do not apply to such codes.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.core import categorical
from vae_jax.core import checks
from vae_jax.core import likelihoods
from vae_jax.data import datasets
from vae_jax.models import interface
from vae_jax.models import layers


class CategoricalVAE(nn.Module):
  """MLP encoder to logits [B, N, K]; the mlp Decoder of flattened codes [B, N * K]."""
  num_latents: int
  categories: int
  image_shape: tuple[int, int, int]
  width: int = 500
  depth: int = 1
  activation: str = "relu"

  def setup(self):
    self.hidden = [nn.Dense(self.width, name=f"enc_hidden_{i}") for i in range(self.depth)]
    self.to_logits = nn.Dense(self.num_latents * self.categories, name="enc_logits")
    self.dec = layers.Decoder(tuple(self.image_shape), "mlp", self.width, self.depth,
                              self.activation)

  def encode(self, x: jax.Array) -> jax.Array:
    h = x.reshape((x.shape[0], -1))
    for layer in self.hidden:
      h = layers.ACTIVATIONS[self.activation](layer(h))
    return self.to_logits(h).reshape((x.shape[0], self.num_latents, self.categories))

  def decode(self, codes: jax.Array) -> jax.Array:
    return self.dec(codes)

  def __call__(self, x: jax.Array, codes: jax.Array):
    return self.encode(x), self.decode(codes)


@dataclasses.dataclass(frozen=True)
class GumbelVAE(interface.Model):
  """The family's model (see the module docstring); hashable, so a static jit argument."""
  reparameterized_log_weights = False  # discrete codes: see interface.Model

  module: CategoricalVAE
  initial_temperature: float = 1.0
  min_temperature: float = 0.5
  anneal_rate: float = 3e-4
  straight_through: bool = False

  @property
  def latent_dim(self) -> Optional[int]:
    return None

  @property
  def code_size(self) -> int:
    return self.module.num_latents * self.module.categories

  def init(self, rng: jax.Array) -> interface.Params:
    x = jnp.zeros((1, *self.module.image_shape), jnp.float32)
    return self.module.init(rng, x, jnp.zeros((1, self.code_size)))["params"]

  def temperature(self, step: jax.Array) -> jax.Array:
    """tau at optimizer step ``step``: max(min, initial * exp(-rate * step))."""
    decayed = self.initial_temperature * jnp.exp(
        -self.anneal_rate * jnp.asarray(step, jnp.float32))
    return jnp.maximum(self.min_temperature, decayed)

  def posterior(self, params, batch: interface.Batch) -> categorical.Categorical:
    return categorical.Categorical(
        self.module.apply({"params": params}, batch["image"], method=CategoricalVAE.encode))

  def likelihood(self, params, codes: jax.Array) -> likelihoods.Bernoulli:
    """p(x|z) for codes [..., N * K] (leading axes kept)."""
    flat = codes.reshape(-1, codes.shape[-1])
    logits = self.module.apply({"params": params}, flat, method=CategoricalVAE.decode)
    return likelihoods.Bernoulli(logits.reshape((*codes.shape[:-1], *logits.shape[1:])))

  def _log_likelihood(self, params, batch: interface.Batch, codes: jax.Array) -> jax.Array:
    x = batch["image"]
    scored = x.reshape((x.shape[0],) + (1,) * (codes.ndim - 2) + x.shape[1:])
    return self.likelihood(params, codes).log_prob(scored)

  def _elbo_terms(self, params, batch, q: categorical.Categorical,
                  codes: jax.Array) -> interface.Terms:
    log_px_z = self._log_likelihood(params, batch, codes)
    kl_per_dim = categorical.kl_to_uniform_per_latent(q.logits)
    rate = jnp.sum(kl_per_dim, -1)
    return {"elbo": log_px_z - rate, "rate": rate, "distortion": -log_px_z,
            interface.KL_PER_DIM: kl_per_dim, interface.POSTERIOR: q}

  def terms(self, params, batch: interface.Batch, keys: jax.Array) -> interface.Terms:
    """The honest ELBO: one exact (one-hot) draw of z ~ q, the KL in closed form."""
    q = self.posterior(params, batch)
    return self._elbo_terms(params, batch, q, q.sample(keys))

  def training_terms(self, params, batch: interface.Batch, keys: jax.Array,
                     step: jax.Array) -> interface.Terms:
    """The relaxed objective at tau(step), what the trainer differentiates."""
    q = self.posterior(params, batch)
    tau = self.temperature(step)
    relaxed = categorical.gumbel_softmax(keys, q.logits, tau)
    if self.straight_through:
      relaxed = categorical.straight_through(relaxed)
    terms = self._elbo_terms(params, batch, q, relaxed.reshape(relaxed.shape[0], -1))
    del terms[interface.POSTERIOR]
    terms["temperature"] = jnp.broadcast_to(tau, terms["elbo"].shape)
    return terms

  def log_weights(self, params, batch: interface.Batch,
                  keys: jax.Array) -> interface.LogWeights:
    q = self.posterior(params, batch)
    scored = q.expand_samples()
    log_prior = -self.module.num_latents * jnp.log(float(self.module.categories))

    def log_weights(sample_ids: jax.Array) -> jax.Array:
      z = q.sample_indexed(keys, sample_ids)                          # [B, c, N * K]
      return self._log_likelihood(params, batch, z) + log_prior - scored.log_prob(z)
    return log_weights

  def encode(self, params, batch: interface.Batch) -> jax.Array:
    return self.posterior(params, batch).mean

  def decode(self, params, codes: jax.Array, rng: Optional[jax.Array] = None,
             condition: Optional[interface.Batch] = None) -> jax.Array:
    del rng, condition
    return self.likelihood(params, codes).mean()

  def sample_observation(self, params, codes: jax.Array, rng: jax.Array,
                         condition: Optional[interface.Batch] = None) -> jax.Array:
    del condition
    return self.likelihood(params, codes).sample(rng)

  def sample_prior(self, rng: jax.Array, num: int,
                   condition: Optional[interface.Batch] = None) -> jax.Array:
    del condition
    logits = jnp.zeros((num, self.module.num_latents, self.module.categories))
    return categorical.one_hot_sample(rng, logits).reshape(num, -1)


def observes(config: ml_collections.ConfigDict) -> str:
  del config
  return "binary"


def validate(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> None:
  del data  # any image shape; binary or grayscale data is checked generically
  checks.number(config, "model.num_latents", minimum=1, integer=True)
  checks.number(config, "model.categories", minimum=2, integer=True)
  checks.number(config, "model.width", minimum=1, integer=True)
  checks.number(config, "model.depth", minimum=0, integer=True)
  checks.choice(config, "model.activation", layers.ACTIVATIONS)
  low = checks.number(config, "model.min_temperature", minimum=0, strict=True)
  high = checks.number(config, "model.initial_temperature", minimum=0, strict=True)
  if high < low:
    checks.fail("model.initial_temperature", high, f"must be >= model.min_temperature={low} "
                "(the schedule anneals down to it)")
  checks.number(config, "model.anneal_rate", minimum=0)
  checks.boolean(config, "model.straight_through")


def build(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> GumbelVAE:
  m = config.model
  module = CategoricalVAE(num_latents=m.num_latents, categories=m.categories,
                          image_shape=tuple(data.image_shape), width=m.width, depth=m.depth,
                          activation=m.activation)
  return GumbelVAE(module, initial_temperature=float(m.initial_temperature),
                   min_temperature=float(m.min_temperature), anneal_rate=float(m.anneal_rate),
                   straight_through=bool(m.straight_through))
