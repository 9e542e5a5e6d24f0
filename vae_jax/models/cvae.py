"""The conditional VAE (Sohn et al. 2015): q(z | x, y), p(x | y, z), prior N(0, I) or p(z | y).

The label y (batch["label"]) enters the encoder and the decoder as a one-hot
vector concatenated to their inputs, so z is free to carry what the label does
not say: the style (stroke, slant, thickness) of a digit. The bound is on the
conditional likelihood log p(x | y):
  elbo = log p(x | y, z) - KL(q(z | x, y) || p(z | y)),   z ~ q(z | x, y)
and the importance weights log p(x | y, z) + log p(z | y) - log q(z | x, y)
give the IWAE estimate of log p(x | y) through the generic evaluator, the
labels coming with the test batch.

Config (``config.model``, with ``name = "cvae"``):
  latent_dim, width, depth, activation   the MLP encoder and decoder
  likelihood    "bernoulli" | "gaussian_fixed" (sigma = gaussian_scale)
  prior         "standard" (N(0, I)) | "learned" (p(z | y) = N(m_y, diag(exp(v_y))),
                one mean and log-variance per class, learned with the rest)
and ``config.objective.kl_estimator``: "analytic" or "mc".

A conditional family (``num_label_classes``, models/interface.py): decoding
without a condition decodes code i as class i mod num_label_classes. Codes
(``encode``, ``decode``, ``sample_prior``) are standardized, u = (z - m_y) / s_y,
whose prior is N(0, I) under every class (with the standard prior u = z): so
``sample_prior`` needs no parameters and one key gives the same style under
every class. Data without labels is refused by ``validate`` before anything loads.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.core import checks
from vae_jax.core import distributions as D
from vae_jax.core import likelihoods
from vae_jax.data import datasets
from vae_jax.models import interface
from vae_jax.models import layers

LIKELIHOODS = ("bernoulli", "gaussian_fixed")
PRIORS = ("standard", "learned")
KL_ESTIMATORS = ("analytic", "mc")


class ConditionalVAE(nn.Module):
  """MLP encoder of [x, one-hot y], MLP decoder of [z, one-hot y]; the learned prior's table."""
  latent_dim: int
  image_shape: tuple[int, int, int]
  num_classes: int
  width: int = 500
  depth: int = 1
  activation: str = "relu"
  prior: str = "standard"

  def setup(self):
    self.enc = layers.Encoder(self.latent_dim, "mlp", self.width, self.depth, self.activation)
    self.dec = layers.Decoder(tuple(self.image_shape), "mlp", self.width, self.depth,
                              self.activation)
    if self.prior == "learned":  # starts as N(0, I) for every class
      shape = (self.num_classes, self.latent_dim)
      self.prior_mean = self.param("prior_mean", nn.initializers.zeros, shape)
      self.prior_logvar = self.param("prior_logvar", nn.initializers.zeros, shape)

  def _one_hot(self, labels: jax.Array) -> jax.Array:
    return jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)

  def encode(self, x: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    inputs = jnp.concatenate([x.reshape((x.shape[0], -1)), self._one_hot(labels)], -1)
    return self.enc(inputs)

  def decode(self, z: jax.Array, labels: jax.Array) -> jax.Array:
    """Location of p(x | y, z) for z [N, d] and labels [N]."""
    return self.dec(jnp.concatenate([z, self._one_hot(labels)], -1))

  def prior_params(self, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, logvar) of p(z | y) for labels of any shape [...] -> [..., d] each."""
    if self.prior == "learned":
      return self.prior_mean[labels], self.prior_logvar[labels]
    zeros = jnp.zeros((*labels.shape, self.latent_dim), jnp.float32)
    return zeros, zeros

  def __call__(self, x: jax.Array, labels: jax.Array, z: jax.Array):
    """Touches every submodule; used by ``init`` only."""
    return self.encode(x, labels), self.decode(z, labels), self.prior_params(labels)


def gaussian_kl_per_dim(mean: jax.Array, logvar: jax.Array, prior_mean: jax.Array,
                        prior_logvar: jax.Array) -> jax.Array:
  """KL(N(mean, e^logvar) || N(prior_mean, e^prior_logvar)) per dimension, in closed form."""
  return 0.5 * (prior_logvar - logvar - 1.0
                + (jnp.exp(logvar) + jnp.square(mean - prior_mean)) * jnp.exp(-prior_logvar))


@dataclasses.dataclass(frozen=True)
class ConditionalModel(interface.Model):
  """The family's model (see the module docstring); hashable, so a static jit argument."""
  module: ConditionalVAE
  likelihood_name: str = "bernoulli"
  gaussian_scale: float = 0.1
  kl_estimator: str = "analytic"

  @property
  def latent_dim(self) -> int:
    return self.module.latent_dim

  @property
  def num_label_classes(self) -> int:
    return self.module.num_classes

  def _apply(self, params, *args, method):
    return self.module.apply({"params": params}, *args, method=method)

  def init(self, rng: jax.Array) -> interface.Params:
    x = jnp.zeros((1, *self.module.image_shape), jnp.float32)
    z = jnp.zeros((1, self.latent_dim), jnp.float32)
    return self.module.init(rng, x, jnp.zeros((1,), jnp.int32), z)["params"]

  def _labels(self, condition: Optional[interface.Batch], num: int) -> jax.Array:
    if condition is None or "label" not in condition:
      return jnp.arange(num) % self.num_label_classes
    return jnp.asarray(condition["label"], jnp.int32)

  @staticmethod
  def _batch_labels(batch: interface.Batch) -> jax.Array:
    if "label" not in batch:
      raise ValueError("A conditional VAE encodes (x, y): the batch has no 'label'.")
    return batch["label"]

  def posterior(self, params, batch: interface.Batch) -> D.DiagonalGaussian:
    """q(z | x, y) of each example."""
    return D.DiagonalGaussian(*self._apply(params, batch["image"], self._batch_labels(batch),
                                           method=ConditionalVAE.encode))

  def prior(self, params, labels: jax.Array) -> D.DiagonalGaussian:
    """p(z | y) for labels [...]: N(0, I) for every class unless learned."""
    return D.DiagonalGaussian(*self._apply(params, labels, method=ConditionalVAE.prior_params))

  def likelihood(self, params, z: jax.Array, labels: jax.Array) -> likelihoods.Likelihood:
    """p(x | y, z) for codes z [..., d] and labels broadcasting to z's leading axes."""
    labels = jnp.broadcast_to(labels.reshape(labels.shape + (1,) * (z.ndim - 1 - labels.ndim)),
                              z.shape[:-1])
    loc = self._apply(params, z.reshape(-1, z.shape[-1]), labels.reshape(-1),
                      method=ConditionalVAE.decode)
    loc = loc.reshape((*z.shape[:-1], *loc.shape[1:]))
    if self.likelihood_name == "bernoulli":
      return likelihoods.Bernoulli(loc)
    return likelihoods.Gaussian(loc, jnp.full_like(loc, math.log(self.gaussian_scale)))

  def _log_likelihood(self, params, batch: interface.Batch, z: jax.Array) -> jax.Array:
    x = batch["image"]
    scored = x.reshape((x.shape[0],) + (1,) * (z.ndim - 2) + x.shape[1:])
    return self.likelihood(params, z, batch["label"]).log_prob(scored)

  def _terms(self, params, batch, keys, q: D.DiagonalGaussian) -> interface.Terms:
    p = self.prior(params, batch["label"])
    z = q.sample(keys)
    log_px_z = self._log_likelihood(params, batch, z)
    if self.kl_estimator == "analytic":
      kl_per_dim = gaussian_kl_per_dim(q.mean, q.logvar, p.mean, p.logvar)
    else:
      kl_per_dim = (D.gaussian_log_prob_per_dim(z, q.mean, q.logvar)
                    - D.gaussian_log_prob_per_dim(z, p.mean, p.logvar))
    rate = jnp.sum(kl_per_dim, -1)
    return {"elbo": log_px_z - rate, "rate": rate, "distortion": -log_px_z,
            interface.KL_PER_DIM: kl_per_dim, interface.POSTERIOR: q}

  def _log_weights(self, params, batch, keys, q: D.DiagonalGaussian) -> interface.LogWeights:
    p = self.prior(params, batch["label"]).expand_samples()
    scored = q.expand_samples()

    def log_weights(sample_ids: jax.Array) -> jax.Array:
      z = q.sample_indexed(keys, sample_ids)                          # [B, c, d]
      return self._log_likelihood(params, batch, z) + p.log_prob(z) - scored.log_prob(z)
    return log_weights

  def terms(self, params, batch: interface.Batch, keys: jax.Array) -> interface.Terms:
    return self._terms(params, batch, keys, self.posterior(params, batch))

  def log_weights(self, params, batch: interface.Batch,
                  keys: jax.Array) -> interface.LogWeights:
    return self._log_weights(params, batch, keys, self.posterior(params, batch))

  def terms_and_log_weights(self, params, batch: interface.Batch, keys: jax.Array,
                            importance_keys: jax.Array):
    q = self.posterior(params, batch)  # one encoder pass for both
    return (self._terms(params, batch, keys, q),
            self._log_weights(params, batch, importance_keys, q))

  def _standardized(self, params, z: jax.Array, labels: jax.Array,
                    inverse: bool = False) -> jax.Array:
    """Codes u = (z - m_y) / s_y, whose prior is N(0, I) under every class (or back)."""
    if self.module.prior == "standard":
      return z
    p = self.prior(params, labels)
    scale = jnp.exp(0.5 * p.logvar)
    return p.mean + scale * z if inverse else (z - p.mean) / scale

  def encode(self, params, batch: interface.Batch) -> jax.Array:
    """E_q[z | x, y] in the standardized codes that ``decode`` and ``sample_prior`` use."""
    return self._standardized(params, self.posterior(params, batch).mean,
                              self._batch_labels(batch))

  def decode(self, params, codes: jax.Array, rng: Optional[jax.Array] = None,
             condition: Optional[interface.Batch] = None) -> jax.Array:
    del rng  # E[x | y, z] is exact
    labels = self._labels(condition, codes.shape[0])
    z = self._standardized(params, codes, labels, inverse=True)
    return self.likelihood(params, z, labels).mean()

  def sample_observation(self, params, codes: jax.Array, rng: jax.Array,
                         condition: Optional[interface.Batch] = None) -> jax.Array:
    labels = self._labels(condition, codes.shape[0])
    z = self._standardized(params, codes, labels, inverse=True)
    return self.likelihood(params, z, labels).sample(rng)

  def sample_prior(self, rng: jax.Array, num: int,
                   condition: Optional[interface.Batch] = None) -> jax.Array:
    """Codes of p(z | y): N(0, I) in the standardized coordinates whatever the prior
    (``decode`` maps them through a learned p(z | y)), so they never depend on y."""
    del condition
    return jax.random.normal(rng, (num, self.latent_dim))


def observes(config: ml_collections.ConfigDict) -> str:
  return "binary" if config.model.likelihood == "bernoulli" else "continuous"


def validate(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> None:
  if data.num_classes is None:
    labelled = [n for n in datasets.DATASETS if datasets.NUM_CLASSES[n] is not None]
    checks.fail("data.name", data.name, "model 'cvae' conditions on labels and this dataset "
                f"has none; datasets with labels: {', '.join(map(repr, labelled))}")
  checks.number(config, "model.latent_dim", minimum=1, integer=True)
  checks.number(config, "model.width", minimum=1, integer=True)
  checks.number(config, "model.depth", minimum=0, integer=True)
  checks.choice(config, "model.activation", layers.ACTIVATIONS)
  checks.choice(config, "model.likelihood", LIKELIHOODS)
  checks.number(config, "model.gaussian_scale", minimum=0, strict=True)
  checks.choice(config, "model.prior", PRIORS)
  checks.choice(config, "objective.kl_estimator", KL_ESTIMATORS)


def build(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> ConditionalModel:
  m = config.model
  module = ConditionalVAE(latent_dim=m.latent_dim, image_shape=tuple(data.image_shape),
                          num_classes=data.num_classes, width=m.width, depth=m.depth,
                          activation=m.activation, prior=m.prior)
  return ConditionalModel(module, likelihood_name=m.likelihood,
                          gaussian_scale=float(m.gaussian_scale),
                          kl_estimator=config.objective.kl_estimator)
