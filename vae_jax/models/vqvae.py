"""VQ-VAE (van den Oord et al. 2017): a grid of discrete codes from a K x D codebook.

Config (``config.model``, with ``name = "vqvae"``):
  num_codes (K), code_dim (D)   the codebook
  width, depth                  conv stages (4x4, stride 2): width, 2*width, ... channels,
                                each halving the image; the code grid is (H, W) / 2**depth
  num_residual                  residual blocks (3x3 then 1x1) after the encoder's and
                                before the decoder's stages
  activation, conv_impl         as in the Gaussian VAE ("auto": matrix products on CPU)
  likelihood, gaussian_scale    p(x | z_q): "bernoulli" | "gaussian_fixed" | "gaussian_learned"
  commitment_cost               beta of the paper: beta * ||z_e - sg[e]||^2
  ema                           True: the codebook follows exponential moving averages of
                                the encoder outputs assigned to each code (the paper's
                                appendix, Sonnet's VectorQuantizerEMA) instead of gradients
  ema_decay, ema_epsilon        gamma, and the Laplace smoothing of the cluster sizes
  restart_dead_codes            re-initialise codes whose usage fell below
  dead_code_threshold           (an EMA, ema_decay, of each code's uses per example) from
                                encoder outputs of the batch

The model as a VAE: q(z|x) puts all its mass on the nearest codes z_q, and the
prior is uniform over the K codes at each of the P grid positions, so
KL(q || p) = P log K exactly: ``rate`` is that constant and ``elbo`` = log p(x|z_q)
- P log K. q being deterministic, ``log_weights`` are that same bound for every
sample (the IWAE "NLL" equals the ELBO; gap 0). A learned prior over the code
grid, fitted after the autoencoder (studies/code_prior), tightens it.

Training: ``distortion`` carries, at zero value, the gradients of the codebook
loss ||sg[z_e] - e||^2 (without EMA) and of the commitment loss, so the generic
loss distortion + beta * rate is the paper's objective while every reported
number stays the bound's. The decoder sees z_e + sg[z_q - z_e] (straight-through).

Codes are integer grids [N, h, w] (``latent_dim`` is None: no interpolations or
traversals). The codebook and its EMA statistics are updated after each optimizer
step (``after_update``: not gradient steps); they live in ``params`` so that
checkpoints hold them, and the update overwrites them from their values before
the step, so the optimizer cannot move them (their gradients are zero anyway).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax.core import checks
from vae_jax.core import likelihoods
from vae_jax.data import datasets
from vae_jax.models import convolutions
from vae_jax.models import interface
from vae_jax.models import layers

LIKELIHOODS = ("bernoulli", "gaussian_fixed", "gaussian_learned")
sg = jax.lax.stop_gradient


def nearest_codes(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """Index of the nearest codebook row (squared Euclidean) for each vector z [..., D]."""
  distances = (jnp.sum(z**2, -1, keepdims=True) - 2 * z @ codebook.T
               + jnp.sum(codebook**2, -1))
  return jnp.argmin(distances, axis=-1).astype(jnp.int32)


def straight_through(z_e: jax.Array, z_q: jax.Array) -> jax.Array:
  """z_q in the forward pass; the identity to z_e in the backward pass."""
  return z_e + sg(z_q - z_e)


def perplexity(counts: jax.Array) -> jax.Array:
  """exp(entropy) of the code distribution with (unnormalized) ``counts`` [..., K]."""
  p = counts / jnp.maximum(jnp.sum(counts, -1, keepdims=True), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), -1))


class Residual(nn.Module):
  """x + 1x1(act(3x3(act(x)))), the paper's residual block."""
  channels: int
  activation: str
  conv_impl: str

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    act = layers.ACTIVATIONS[self.activation]
    conv, _ = convolutions.conv_layers(self.conv_impl)
    h = conv(self.channels, (3, 3), padding="SAME", name="conv3")(act(x))
    return x + conv(x.shape[-1], (1, 1), padding="SAME", name="conv1")(act(h))


class VQNet(nn.Module):
  """The encoder (x -> z_e [B, h, w, D]) and decoder (z [B, h, w, D] -> p(x|z)'s location)."""
  image_shape: Sequence[int]
  code_dim: int
  width: int
  depth: int
  num_residual: int
  activation: str = "relu"
  likelihood: str = "bernoulli"
  gaussian_scale: float = 0.1
  conv_impl: str = "auto"

  def setup(self):
    conv, conv_transpose = convolutions.conv_layers(self.conv_impl)
    stages = [self.width * 2**i for i in range(self.depth)]
    self.down = [conv(ch, (4, 4), strides=(2, 2), padding="SAME", name=f"down_{i}")
                 for i, ch in enumerate(stages)]
    self.enc_res = [Residual(stages[-1], self.activation, self.conv_impl, name=f"enc_res_{i}")
                    for i in range(self.num_residual)]
    self.to_code = conv(self.code_dim, (1, 1), padding="SAME", name="to_code")
    self.from_code = conv(stages[-1], (3, 3), padding="SAME", name="from_code")
    self.dec_res = [Residual(stages[-1], self.activation, self.conv_impl, name=f"dec_res_{i}")
                    for i in range(self.num_residual)]
    self.up = [conv_transpose(ch, (4, 4), strides=(2, 2), padding="SAME", name=f"up_{i}")
               for i, ch in enumerate(stages)]
    self.out = conv(self.image_shape[-1], (3, 3), padding="SAME", name="out")
    if self.likelihood == "gaussian_learned":
      self.log_scale = self.param("log_scale", nn.initializers.constant(
          math.log(self.gaussian_scale)), tuple(self.image_shape))

  def encode(self, x: jax.Array) -> jax.Array:
    act = layers.ACTIVATIONS[self.activation]
    h = x
    for layer in self.down:
      h = act(layer(h))
    for block in self.enc_res:
      h = block(h)
    return self.to_code(act(h))

  def decode(self, z: jax.Array) -> tuple[jax.Array, Optional[jax.Array]]:
    """(location, log-scale or None for Bernoulli) of p(x|z)."""
    act = layers.ACTIVATIONS[self.activation]
    h = self.from_code(z)
    for block in self.dec_res:
      h = block(h)
    for layer in reversed(self.up):
      h = layer(act(h))
    loc = self.out(act(h))
    if self.likelihood == "bernoulli":
      return loc, None
    if self.likelihood == "gaussian_learned":
      return loc, jnp.broadcast_to(self.log_scale, loc.shape)
    return loc, jnp.full_like(loc, math.log(self.gaussian_scale))

  def __call__(self, x: jax.Array):
    return self.decode(self.encode(x))


@dataclasses.dataclass(frozen=True)
class VQVAE(interface.Model):
  """The family's model (module docstring). Params: {'net', 'codebook' [K, D], 'state'}.

  ``state``: 'usage' [K] (EMA of uses per example) and, with EMA, 'cluster_size' [K]
  and 'embed_sum' [K, D]; touched only by ``after_update``.
  """
  reparameterized_log_weights = False  # discrete codes: see interface.Model

  module: VQNet
  num_codes: int
  ema: bool = False
  ema_decay: float = 0.99
  ema_epsilon: float = 1e-5
  commitment_cost: float = 0.25
  restart_dead_codes: bool = False
  dead_code_threshold: float = 1e-3

  @property
  def latent_dim(self) -> None:
    return None

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.module.image_shape)

  @property
  def grid_shape(self) -> tuple[int, int]:
    """(h, w) of the code grid."""
    h, w, _ = self.image_shape
    return h // 2**self.module.depth, w // 2**self.module.depth

  @property
  def num_positions(self) -> int:
    return math.prod(self.grid_shape)

  def init(self, rng: jax.Array) -> interface.Params:
    net_rng, code_rng = jax.random.split(rng)
    net = self.module.init(net_rng, jnp.zeros((1, *self.image_shape), jnp.float32))["params"]
    codebook = jax.random.normal(code_rng, (self.num_codes, self.module.code_dim))
    # Usage starts at 0: every code is dead until used, so with restarts the codes the
    # first batches leave unused start from encoder outputs (a data-dependent init).
    state = {"usage": jnp.zeros((self.num_codes,))}
    if self.ema:  # as if each code had been used once per example, at its initial value
      state["cluster_size"] = jnp.ones((self.num_codes,))
      state["embed_sum"] = codebook
    return {"net": net, "codebook": codebook, "state": state}

  def _apply(self, params, *args, method):
    return self.module.apply({"params": params["net"]}, *args, method=method)

  def encoder_outputs(self, params, batch: interface.Batch) -> jax.Array:
    """z_e [B, h, w, D]."""
    return self._apply(params, batch["image"], method=VQNet.encode)

  def _codebook(self, params) -> jax.Array:
    return sg(params["codebook"]) if self.ema else params["codebook"]

  def likelihood(self, params, z: jax.Array) -> likelihoods.Likelihood:
    loc, log_scale = self._apply(params, z, method=VQNet.decode)
    if log_scale is None:
      return likelihoods.Bernoulli(loc)
    return likelihoods.Gaussian(loc, log_scale)

  def terms(self, params, batch: interface.Batch, keys: jax.Array) -> interface.Terms:
    """Deterministic q: ``keys`` are unused. See the module docstring for the terms."""
    del keys
    z_e = self.encoder_outputs(params, batch)
    codebook = self._codebook(params)
    codes = nearest_codes(sg(z_e), codebook)
    z_q = codebook[codes]
    log_px = self.likelihood(params, straight_through(z_e, z_q)).log_prob(batch["image"])
    commitment = jnp.sum((z_e - sg(z_q))**2, axis=(1, 2, 3))
    codebook_loss = (jnp.zeros_like(commitment) if self.ema
                     else jnp.sum((sg(z_e) - z_q)**2, axis=(1, 2, 3)))
    vq_loss = codebook_loss + self.commitment_cost * commitment
    rate = jnp.full_like(log_px, self.num_positions * math.log(self.num_codes))
    distortion = -log_px + (vq_loss - sg(vq_loss))  # the value of -log p(x|z_q)
    counts = jax.nn.one_hot(codes.reshape(codes.shape[0], -1), self.num_codes).sum(1)
    return {"elbo": log_px - rate, "rate": rate, "distortion": distortion,
            "commitment_loss": commitment, "codebook_loss": codebook_loss,
            "image_perplexity": perplexity(counts)}

  def log_weights(self, params, batch: interface.Batch,
                  keys: jax.Array) -> interface.LogWeights:
    """log p(x|z_q) + log p(z_q) - log q(z_q|x), with log q = 0: the ELBO for every sample."""
    elbo = self.terms(params, batch, keys)["elbo"]
    return lambda sample_ids: jnp.broadcast_to(elbo[:, None], (elbo.shape[0], len(sample_ids)))

  def terms_and_log_weights(self, params, batch: interface.Batch, keys: jax.Array,
                            importance_keys: jax.Array):
    terms = self.terms(params, batch, keys)  # one encoder and decoder pass for both
    elbo = terms["elbo"]
    return terms, lambda ids: jnp.broadcast_to(elbo[:, None], (elbo.shape[0], len(ids)))

  def encode(self, params, batch: interface.Batch) -> jax.Array:
    """The code grid [B, h, w] (int32): the nearest code at each position."""
    return nearest_codes(self.encoder_outputs(params, batch), params["codebook"])

  def decode(self, params, codes: jax.Array, rng: Optional[jax.Array] = None,
             condition: Optional[interface.Batch] = None) -> jax.Array:
    del rng, condition
    return self.likelihood(params, params["codebook"][codes]).mean()

  def sample_observation(self, params, codes: jax.Array, rng: jax.Array,
                         condition: Optional[interface.Batch] = None) -> jax.Array:
    del condition
    return self.likelihood(params, params["codebook"][codes]).sample(rng)

  def sample_prior(self, rng: jax.Array, num: int,
                   condition: Optional[interface.Batch] = None) -> jax.Array:
    """Codes from the uniform prior the bound is computed with (a learned one: studies/code_prior)."""
    del condition
    return jax.random.randint(rng, (num, *self.grid_shape), 0, self.num_codes, jnp.int32)

  # The after-update capability (interface.Model.update_statistics / after_update).

  def update_statistics(self, params, batch: interface.Batch,
                        keys: jax.Array) -> dict[str, jax.Array]:
    return batch_statistics(self.encoder_outputs(params, batch), params["codebook"], keys)

  def after_update(self, previous, params, stats: dict[str, jax.Array]):
    """(params with the codebook state advanced from ``previous``, metrics)."""
    gamma, old = self.ema_decay, previous["state"]
    state = {"usage": gamma * old["usage"] + (1 - gamma) * stats["counts"]}
    codebook = params["codebook"]
    if self.ema:
      size = gamma * old["cluster_size"] + (1 - gamma) * stats["counts"]
      state["embed_sum"] = gamma * old["embed_sum"] + (1 - gamma) * stats["sums"]
      state["cluster_size"] = size
      codebook = state["embed_sum"] / laplace_smoothed(size, self.ema_epsilon)[:, None]
    dead = state["usage"] < self.dead_code_threshold
    metrics = {"codebook_perplexity": perplexity(stats["counts"]),
               "dead_codes": jnp.sum(dead).astype(jnp.float32)}
    if self.restart_dead_codes:
      restart = dead & (stats["offers"] > 0)
      offered = stats["offered"] / jnp.maximum(stats["offers"], 1e-12)[:, None]
      codebook = jnp.where(restart[:, None], offered, codebook)
      state["usage"] = jnp.where(restart, jnp.mean(state["usage"]), state["usage"])
      if self.ema:
        typical = jnp.mean(state["cluster_size"])
        state["cluster_size"] = jnp.where(restart, typical, state["cluster_size"])
        state["embed_sum"] = jnp.where(restart[:, None], offered * typical, state["embed_sum"])
      metrics["restarted_codes"] = jnp.sum(restart).astype(jnp.float32)
    return {**params, "codebook": codebook, "state": state}, metrics


def batch_statistics(z_e: jax.Array, codebook: jax.Array,
                     keys: jax.Array) -> dict[str, jax.Array]:
  """What ``after_update`` needs of a batch, as means per example (z_e [B, h, w, D]).

  'counts' [K]: uses of each code; 'sums' [K, D]: the encoder outputs assigned to
  it. Restart candidates: each example offers the z_e at one random position to one
  random code (both drawn from its key, so the same on any device split): 'offers'
  [K] and 'offered' [K, D] (their sum). Means per example average over devices into
  the global batch's means.
  """
  num_codes = codebook.shape[0]
  flat = z_e.reshape(z_e.shape[0], -1, z_e.shape[-1])                     # [B, P, D]
  one_hot = jax.nn.one_hot(nearest_codes(flat, codebook), num_codes)      # [B, P, K]
  pick = jax.vmap(lambda k: jax.random.randint(
      jax.random.fold_in(k, 1), (2,), 0, jnp.array([flat.shape[1], num_codes])))(keys)
  offer = jax.nn.one_hot(pick[:, 1], num_codes)                           # [B, K]
  chosen = jnp.take_along_axis(flat, pick[:, :1, None], axis=1)[:, 0]     # [B, D]
  return {"counts": one_hot.sum(1).mean(0),
          "sums": jnp.einsum("bpk,bpd->kd", one_hot, flat) / flat.shape[0],
          "offers": offer.mean(0), "offered": offer.T @ chosen / flat.shape[0]}


def laplace_smoothed(cluster_size: jax.Array, epsilon: float) -> jax.Array:
  """(N_k + eps) / (n + K eps) * n, n = sum N_k: no code's size is 0 (Sonnet's VQ-EMA)."""
  n = jnp.sum(cluster_size)
  return (cluster_size + epsilon) / (n + cluster_size.shape[0] * epsilon) * n


def observes(config: ml_collections.ConfigDict) -> str:
  return "binary" if config.model.likelihood == "bernoulli" else "continuous"


def validate(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> None:
  checks.number(config, "model.num_codes", minimum=2, integer=True)
  checks.number(config, "model.code_dim", minimum=1, integer=True)
  checks.number(config, "model.width", minimum=1, integer=True)
  depth = checks.number(config, "model.depth", minimum=1, integer=True)
  checks.number(config, "model.num_residual", minimum=0, integer=True)
  checks.choice(config, "model.activation", layers.ACTIVATIONS)
  checks.choice(config, "model.likelihood", LIKELIHOODS)
  checks.number(config, "model.gaussian_scale", minimum=0, strict=True)
  checks.number(config, "model.commitment_cost", minimum=0)
  checks.boolean(config, "model.ema")
  checks.boolean(config, "model.restart_dead_codes")
  decay = checks.number(config, "model.ema_decay", minimum=0)
  if decay >= 1:
    checks.fail("model.ema_decay", decay, "must be in [0, 1): the weight of the past")
  checks.number(config, "model.ema_epsilon", minimum=0, strict=True)
  checks.number(config, "model.dead_code_threshold", minimum=0)
  checks.choice(config, "model.conv_impl", convolutions.CONV_IMPLS)
  if checks.get(config, "objective.free_bits") > 0:
    checks.fail("objective.free_bits", config.objective.free_bits,
                "must be 0 for vqvae: its rate is the constant P log K, with no per-dimension KL")
  convolutions.check_stages(depth, data.image_shape, data.name)


def build(config: ml_collections.ConfigDict, data: datasets.DataInfo) -> VQVAE:
  m = config.model
  module = VQNet(image_shape=tuple(data.image_shape), code_dim=m.code_dim, width=m.width,
                 depth=m.depth, num_residual=m.num_residual, activation=m.activation,
                 likelihood=m.likelihood, gaussian_scale=m.gaussian_scale,
                 conv_impl=m.conv_impl)
  return VQVAE(module, num_codes=m.num_codes, ema=m.ema, ema_decay=m.ema_decay,
               ema_epsilon=m.ema_epsilon, commitment_cost=m.commitment_cost,
               restart_dead_codes=m.restart_dead_codes,
               dead_code_threshold=m.dead_code_threshold)
