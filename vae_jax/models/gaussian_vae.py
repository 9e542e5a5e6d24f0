"""The VAE of Kingma & Welling (2014): diagonal-Gaussian q(z|x), N(0, I) prior, any p(x|z).

Config (``config.model``, with ``name = "gaussian_vae"``):
  encoder     "mlp" | "conv" | "global" (one q(z) for every x: no amortization)
  decoder     "mlp" | "conv" | "autoregressive" (p(x_i | x_<i, z), binary images)
  latent_dim, width, depth, activation ("gated": gated dense layers, mlp only)
  conv_impl   how the conv encoder and decoder compute their convolutions:
              "lax" (nn.Conv, nn.ConvTranspose) | "matmul" (the same layers as
              matrix products, the transposed ones in sub-pixel form:
              models/convolutions.py) | "auto" ("matmul" on CPU, "lax"
              elsewhere). The parameters are the same, the outputs equal up to
              float rounding. A run recorded before the field existed has none:
              it reads as "auto".
  conv_channels, conv_kernels, conv_hidden (optional; only configs/dsprites.py sets them)
              explicit conv stages: channels and kernel size per stride-2 stage and
              a dense layer of conv_hidden units after them (disentanglement_lib's
              conv_encoder, (32, 32, 64, 64), (4, 4, 2, 2), 256); the decoder mirrors
              them (its deconv_decoder). Absent or empty: the width/depth stages.
  init        how the dense layers start: "lecun_normal" (flax's default) | "torch"
              (PyTorch's nn.Linear default, for protocols published with PyTorch code)
  likelihood  "bernoulli" | "gaussian_fixed" (sigma = gaussian_scale) |
              "gaussian_learned" (a per-pixel log sigma, starting at gaussian_scale)
and ``config.objective.kl_estimator``: "analytic" (closed form) or "mc"
(log q(z|x) - log p(z) at the sampled z).

Parameters are ``{'enc': ..., 'dec': ...}`` (plus ``log_scale`` for a learned
Gaussian scale). For the autoregressive decoder, E[x|z] is intractable: its
pictures show p(x_i = 1 | x_<i, z) along one ancestral draw.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.core import checks
from vae_jax.core import distributions as D
from vae_jax.core import likelihoods
from vae_jax.data import datasets
from vae_jax.models import convolutions
from vae_jax.models import interface
from vae_jax.models import layers
from vae_jax.objectives import elbo
from vae_jax.objectives import iwae

# Runs recorded before config.model.name existed are of this family; fields added since
# then read as these values (models.upgrade_recorded).
RECORDED_WITHOUT_NAME = True
ADDED_FIELDS = {"conv_impl": "auto", "init": "lecun_normal"}

ENCODERS = ("mlp", "conv", "global")
DECODERS = ("mlp", "conv", "autoregressive")
LIKELIHOODS = ("bernoulli", "gaussian_fixed", "gaussian_learned")
KL_ESTIMATORS = ("analytic", "mc")


class VAE(nn.Module):
  """Encoder + decoder; owns p(x|z)'s log-scale when it is learned."""
  latent_dim: int
  image_shape: Sequence[int]
  encoder: str = "mlp"
  decoder: str = "mlp"
  width: int = 500
  depth: int = 1
  activation: str = "relu"
  likelihood: str = "bernoulli"
  gaussian_scale: float = 0.1
  conv_impl: str = "auto"
  dense_init: str = "lecun_normal"
  conv_channels: Sequence[int] = ()
  conv_kernels: Sequence[int] = ()
  conv_hidden: int = 0

  def setup(self):
    self.enc = layers.Encoder(self.latent_dim, self.encoder, self.width, self.depth,
                              self.activation, self.conv_impl, self.dense_init,
                              self.conv_channels, self.conv_kernels, self.conv_hidden)
    shape = tuple(self.image_shape)
    if self.decoder == "autoregressive":
      self.dec = layers.AutoregressiveDecoder(shape, self.width, self.depth, self.activation)
    else:
      self.dec = layers.Decoder(shape, self.decoder, self.width, self.depth, self.activation,
                                self.conv_impl, self.dense_init, self.conv_channels,
                                self.conv_hidden)
    if self.likelihood == "gaussian_learned":
      self.log_scale = self.param(
          "log_scale", nn.initializers.constant(math.log(self.gaussian_scale)), shape)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.enc(x)

  def decode(self, z: jax.Array) -> tuple[jax.Array, Optional[jax.Array]]:
    """(location, log-scale) of p(x|z) for z [N, d]; the log-scale is None for Bernoulli."""
    loc = self.dec(z)
    if self.likelihood == "bernoulli":
      return loc, None
    if self.likelihood == "gaussian_learned":
      return loc, jnp.broadcast_to(self.log_scale, loc.shape)
    return loc, jnp.full_like(loc, math.log(self.gaussian_scale))

  def teacher_forced_logits(self, z: jax.Array, x: jax.Array) -> jax.Array:
    return self.dec(z, x)

  def draw(self, z: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.dec.sample(z, rng)

  def __call__(self, x: jax.Array, z: jax.Array):
    """Touches every submodule; used by ``init`` only."""
    if self.decoder == "autoregressive":
      return self.encode(x), self.dec(z, x)
    return self.encode(x), self.decode(z)


@dataclasses.dataclass(frozen=True)
class GaussianVAE(interface.Model):
  """The family's model (see the module docstring); hashable, so a static jit argument."""
  module: VAE
  kl_estimator: str = "analytic"
  # A population member's mask of its latent units ([d] of 0/1; ``with_latent_mask``).
  latent_mask: Optional[jax.Array] = None

  def with_latent_mask(self, mask: jax.Array) -> "GaussianVAE":
    """This model with only the units where ``mask`` is 1 in use: the latent-mask
    capability of populations (training/population.py). A masked unit's posterior is
    the prior, its code is 0 in the decoder and it is left out of log q and log p(z), so
    it has no rate and its parameters get zero gradients."""
    return dataclasses.replace(self, latent_mask=mask)

  @property
  def latent_dim(self) -> int:
    return self.module.latent_dim

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.module.image_shape)

  def _apply(self, params, *args, method):
    return self.module.apply({"params": params}, *args, method=method)

  def init(self, rng: jax.Array) -> interface.Params:
    x = jnp.zeros((1, *self.image_shape), jnp.float32)
    z = jnp.zeros((1, self.latent_dim), jnp.float32)
    return self.module.init(rng, x, z)["params"]

  def posterior(self, params, batch: interface.Batch) -> D.DiagonalGaussian:
    """q(z|x) of each example."""
    mean, logvar = self._apply(params, batch["image"], method=VAE.encode)
    if self.latent_mask is not None:
      mean, logvar = mean * self.latent_mask, logvar * self.latent_mask
    return D.DiagonalGaussian(mean, logvar)

  def likelihood(self, params, z: jax.Array) -> likelihoods.Likelihood:
    """p(x|z) for codes z [..., d] (leading axes kept)."""
    if self.latent_mask is not None:
      z = z * self.latent_mask
    if self.module.decoder == "autoregressive":
      return likelihoods.Autoregressive(
          score=lambda x: likelihoods.Bernoulli(
              self._apply(params, z, x, method=VAE.teacher_forced_logits)),
          draw=lambda rng: self._apply(params, z, rng, method=VAE.draw))
    loc, log_scale = self._apply(params, z.reshape(-1, z.shape[-1]), method=VAE.decode)
    unflat = lambda a: a.reshape((*z.shape[:-1], *a.shape[1:]))
    if log_scale is None:
      return likelihoods.Bernoulli(unflat(loc))
    return likelihoods.Gaussian(unflat(loc), unflat(log_scale))

  def log_likelihood(self, params, batch: interface.Batch) -> Callable[[jax.Array], jax.Array]:
    """z [B, d] or [B, c, d] -> log p(x_b | z) [B] or [B, c] for the batch's images."""
    x = batch["image"]

    def log_likelihood(z: jax.Array) -> jax.Array:
      scored = x.reshape((x.shape[0],) + (1,) * (z.ndim - 2) + x.shape[1:])
      return self.likelihood(params, z).log_prob(scored)
    return log_likelihood

  def _terms(self, params, batch: interface.Batch, keys: jax.Array,
             q: D.DiagonalGaussian) -> interface.Terms:
    terms = elbo.gaussian_elbo_terms(q, self.log_likelihood(params, batch), keys,
                                     self.kl_estimator)
    terms[interface.POSTERIOR] = q
    return terms

  def terms(self, params, batch: interface.Batch, keys: jax.Array) -> interface.Terms:
    return self._terms(params, batch, keys, self.posterior(params, batch))

  def log_weights(self, params, batch: interface.Batch,
                  keys: jax.Array) -> interface.LogWeights:
    return iwae.gaussian_log_weights(self.posterior(params, batch),
                                     self.log_likelihood(params, batch), keys,
                                     latent_mask=self.latent_mask)

  def log_weights_stopped_posterior(self, params, batch: interface.Batch,
                                    keys: jax.Array) -> interface.LogWeights:
    """The DReG capability (interface.DREG_METHODS): log q scored with stopped parameters."""
    return iwae.gaussian_log_weights(self.posterior(params, batch),
                                     self.log_likelihood(params, batch), keys,
                                     stop_posterior=True, latent_mask=self.latent_mask)

  def posterior_params(self, params) -> interface.Params:
    """True for q(z|x)'s parameters (the encoder), False for p(x|z)'s."""
    return {k: jax.tree.map(lambda _, enc=(k == "enc"): enc, v) for k, v in params.items()}

  def terms_and_log_weights(self, params, batch: interface.Batch, keys: jax.Array,
                            importance_keys: jax.Array):
    q = self.posterior(params, batch)  # one encoder pass for both
    return (self._terms(params, batch, keys, q),
            iwae.gaussian_log_weights(q, self.log_likelihood(params, batch), importance_keys,
                                      latent_mask=self.latent_mask))

  def encode(self, params, batch: interface.Batch) -> jax.Array:
    return self.posterior(params, batch).mean

  def decode(self, params, codes: jax.Array, rng: Optional[jax.Array] = None,
             condition: Optional[interface.Batch] = None) -> jax.Array:
    del condition  # unconditional
    return self.likelihood(params, codes).mean(rng)

  def sample_observation(self, params, codes: jax.Array, rng: jax.Array,
                         condition: Optional[interface.Batch] = None) -> jax.Array:
    del condition
    return self.likelihood(params, codes).sample(rng)

  def sample_prior(self, rng: jax.Array, num: int,
                   condition: Optional[interface.Batch] = None) -> jax.Array:
    del condition
    return jax.random.normal(rng, (num, self.latent_dim))


def conv_impl_of(config: ml_collections.ConfigDict) -> str:
  """``config.model.conv_impl``; "auto" for a run recorded before the field existed, so that
  its checkpoints (whose parameters do not depend on the field) load as they are."""
  return config.model.get("conv_impl", "auto")


def conv_stages_of(config: ml_collections.ConfigDict) -> tuple[tuple, tuple, int]:
  """(conv_channels, conv_kernels, conv_hidden); empty for configs without them."""
  m = config.model
  return (tuple(m.get("conv_channels", ())), tuple(m.get("conv_kernels", ())),
          int(m.get("conv_hidden", 0)))


def observes(config: ml_collections.ConfigDict) -> str:
  return "binary" if config.model.likelihood == "bernoulli" else "continuous"


def validate(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> None:
  encoder = checks.choice(config, "model.encoder", ENCODERS)
  decoder = checks.choice(config, "model.decoder", DECODERS)
  checks.number(config, "model.latent_dim", minimum=1, integer=True)
  checks.number(config, "model.width", minimum=1, integer=True)
  depth = checks.number(config, "model.depth", minimum=0, integer=True)
  activation = checks.choice(config, "model.activation", layers.MLP_ACTIVATIONS)
  if activation == layers.GATED and (encoder != "mlp" or decoder != "mlp"):
    checks.fail("model.activation", activation, "gated layers are dense: they need "
                "model.encoder and model.decoder 'mlp'; use one of "
                f"{', '.join(map(repr, layers.ACTIVATIONS))}")
  checks.choice(config, "model.init", layers.DENSE_INITS)
  likelihood = checks.choice(config, "model.likelihood", LIKELIHOODS)
  checks.number(config, "model.gaussian_scale", minimum=0, strict=True)
  checks.choice(config, "objective.kl_estimator", KL_ESTIMATORS)
  conv_impl = conv_impl_of(config)
  if conv_impl not in convolutions.CONV_IMPLS:
    checks.fail("model.conv_impl", conv_impl, "valid values are "
                f"{', '.join(map(repr, convolutions.CONV_IMPLS))} (how the conv layers are "
                "computed; 'auto': 'matmul' on CPU, 'lax' elsewhere)")
  if decoder == "autoregressive" and likelihood != "bernoulli":
    checks.fail("model.likelihood", likelihood,
                "decoder 'autoregressive' is a Bernoulli model of binary pixels; use 'bernoulli'")
  if decoder == "autoregressive" and data.image_shape[2] != 1:
    checks.fail("data.name", data.name, "decoder 'autoregressive' models one-channel images; "
                "use a grayscale dataset")
  if "conv" in (encoder, decoder):
    if depth < 1:
      checks.fail("model.depth", depth, "a conv encoder/decoder needs at least 1 stage")
    channels, kernels, hidden = conv_stages_of(config)
    if channels:
      if len(kernels) != len(channels) or depth != len(channels):
        checks.fail("model.conv_kernels", kernels, f"give one kernel size per stage of "
                    f"model.conv_channels={channels}, and model.depth={len(channels)}")
      if not all(k in (2, 4) for k in kernels) and convolutions.resolve_conv_impl(
          conv_impl) == "matmul":
        checks.fail("model.conv_kernels", kernels, "conv_impl 'matmul' computes 2x2 and 4x4 "
                    "stride-2 stages; use those sizes or model.conv_impl='lax'")
      if hidden < 0:
        checks.fail("model.conv_hidden", hidden, "use 0 (no dense layer) or a unit count")
    convolutions.check_stages(depth, data.image_shape, data.name)


def build(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> GaussianVAE:
  m = config.model
  module = VAE(latent_dim=m.latent_dim, image_shape=tuple(data.image_shape), encoder=m.encoder,
               decoder=m.decoder, width=m.width, depth=m.depth, activation=m.activation,
               likelihood=m.likelihood, gaussian_scale=m.gaussian_scale,
               conv_impl=conv_impl_of(config),
               dense_init=config.model.get("init", "lecun_normal"),
               **dict(zip(("conv_channels", "conv_kernels", "conv_hidden"),
                          conv_stages_of(config))))
  return GaussianVAE(module, config.objective.kl_estimator)
