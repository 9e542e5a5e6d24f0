"""Encoders and decoders as flax.linen modules, used only through init/apply.

The encoder maps an image batch [B, H, W, C] in [0, 1] to the mean and
log-variance of a diagonal Gaussian q(z|x); the decoder maps z [B, latent_dim]
to the location of p(x|z) (and its log-scale for the Gaussian likelihoods).
``VAE`` holds one of each so that params are ``{'enc': ..., 'dec': ...}`` (plus
``log_scale`` for a learned Gaussian scale);
``encode``/``decode`` are the pure functions the objectives call.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "elu": nn.elu,
    "swish": nn.swish,
    "softplus": nn.softplus,
    "tanh": jnp.tanh,
    "leaky_relu": nn.leaky_relu,
}
ENCODERS = ("mlp", "conv", "global")  # "global": one q(z) for every x (no amortization)
DECODERS = ("mlp", "conv")


def _conv_channels(width: int, depth: int) -> list[int]:
  """Channels per conv stage: width, 2*width, 4*width, ... (one stage per halving)."""
  return [width * 2**i for i in range(depth)]


class Encoder(nn.Module):
  """x -> (mean, logvar) of q(z|x).

  "mlp": ``depth`` dense layers of ``width`` units. "conv": ``depth`` stride-2
  4x4 convolutions with width, 2*width, ... channels, each halving the image.
  "global": x is ignored; (mean, logvar) are two free vectors shared by the
  whole dataset, q(z|x) = q(z), the baseline that shows why q must depend on x.
  """
  latent_dim: int
  architecture: str
  width: int
  depth: int
  activation: str

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if self.architecture == "global":  # started off the prior, as an untrained encoder is
      mean = self.param("mean", nn.initializers.normal(1.0), (self.latent_dim,))
      logvar = self.param("logvar", nn.initializers.zeros, (self.latent_dim,))
      batch = (x.shape[0], self.latent_dim)
      return jnp.broadcast_to(mean, batch), jnp.broadcast_to(logvar, batch)
    act = ACTIVATIONS[self.activation]
    h = x
    if self.architecture == "mlp":
      h = h.reshape((h.shape[0], -1))
      for i in range(self.depth):
        h = act(nn.Dense(self.width, name=f"hidden_{i}")(h))
    else:
      for i, ch in enumerate(_conv_channels(self.width, self.depth)):
        h = act(nn.Conv(ch, (4, 4), strides=(2, 2), padding="SAME", name=f"conv_{i}")(h))
      h = h.reshape((h.shape[0], -1))
    mean = nn.Dense(self.latent_dim, name="mean")(h)
    logvar = nn.Dense(self.latent_dim, name="logvar")(h)
    return mean, logvar


class Decoder(nn.Module):
  """z -> location of p(x|z), shaped like the image; mirrors the Encoder.

  "conv": a dense projection to the smallest feature map, then stride-2
  transposed convolutions back to full size and a 3x3 output convolution.
  """
  image_shape: Sequence[int]
  architecture: str
  width: int
  depth: int
  activation: str

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    act = ACTIVATIONS[self.activation]
    height, width, channels = self.image_shape
    if self.architecture == "mlp":
      h = z
      for i in range(self.depth):
        h = act(nn.Dense(self.width, name=f"hidden_{i}")(h))
      out = nn.Dense(math.prod(self.image_shape), name="out")(h)
      return out.reshape((z.shape[0], *self.image_shape))
    stages = _conv_channels(self.width, self.depth)
    h0, w0 = height // 2**self.depth, width // 2**self.depth
    h = act(nn.Dense(h0 * w0 * stages[-1], name="project")(z))
    h = h.reshape((z.shape[0], h0, w0, stages[-1]))
    for i, ch in reversed(list(enumerate(stages))):
      h = act(nn.ConvTranspose(ch, (4, 4), strides=(2, 2), padding="SAME",
                               name=f"deconv_{i}")(h))
    return nn.Conv(channels, (3, 3), padding="SAME", name="out")(h)


class VAE(nn.Module):
  """Encoder + decoder; the decoder also owns p(x|z)'s scale when it is learned."""
  latent_dim: int
  image_shape: Sequence[int]
  encoder: str = "mlp"
  decoder: str = "mlp"
  width: int = 500
  depth: int = 1
  activation: str = "relu"
  likelihood: str = "bernoulli"
  gaussian_scale: float = 0.1

  def setup(self):
    self.enc = Encoder(self.latent_dim, self.encoder, self.width, self.depth, self.activation)
    self.dec = Decoder(tuple(self.image_shape), self.decoder, self.width, self.depth,
                       self.activation)
    if self.likelihood == "gaussian_learned":
      self.log_scale = self.param(
          "log_scale", nn.initializers.constant(math.log(self.gaussian_scale)),
          tuple(self.image_shape))

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return self.enc(x)

  def decode(self, z: jax.Array) -> tuple[jax.Array, Optional[jax.Array]]:
    """Returns (location, log-scale); the log-scale is None for Bernoulli."""
    loc = self.dec(z)
    if self.likelihood == "bernoulli":
      return loc, None
    if self.likelihood == "gaussian_learned":
      return loc, jnp.broadcast_to(self.log_scale, loc.shape)
    return loc, jnp.full_like(loc, math.log(self.gaussian_scale))

  def __call__(self, x: jax.Array, z: jax.Array):
    """Touches every submodule; used by ``init`` only."""
    return self.encode(x), self.decode(z)


def build_model(model_config: ml_collections.ConfigDict,
                image_shape: Sequence[int]) -> VAE:
  return VAE(
      latent_dim=model_config.latent_dim,
      image_shape=tuple(image_shape),
      encoder=model_config.encoder,
      decoder=model_config.decoder,
      width=model_config.width,
      depth=model_config.depth,
      activation=model_config.activation,
      likelihood=model_config.likelihood,
      gaussian_scale=model_config.gaussian_scale,
  )


def init_params(model: VAE, rng: jax.Array) -> dict:
  x = jnp.zeros((1, *model.image_shape), jnp.float32)
  z = jnp.zeros((1, model.latent_dim), jnp.float32)
  return model.init(rng, x, z)["params"]


def encode(model: VAE, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pure encoder: params, x -> (mean, logvar) of q(z|x)."""
  return model.apply({"params": params}, x, method=VAE.encode)


def decode(model: VAE, params: dict, z: jax.Array):
  """Pure decoder: params, z -> (location, log-scale) of p(x|z)."""
  return model.apply({"params": params}, z, method=VAE.decode)
