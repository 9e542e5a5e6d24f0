"""Auxiliary networks: a second network trained in the same step by its own loss.

Some objectives need a network besides the model: FactorVAE (Kim & Mnih 2018) estimates
the total correlation of q(z) with a discriminator that tells draws of q(z) from draws
of the product of its marginals. The trainer knows only this module's ``Auxiliary``
protocol, never a model's name:

  init(rng, latent_dim) -> params          the auxiliary network's own parameters
  optimizer() -> optax transformation      its own optimizer (state in ``TrainState.aux``)
  model_term(params, z) -> [b]             what the model's loss reads of it (gradients
                                           reach z, never the auxiliary's parameters)
  loss(params, z, positions, key, axis_name) -> (loss, metrics)
                                           its own loss on the model's draws z (stopped)

Both updates of a step start from the same parameters, as disentanglement_lib's grouped
train ops do. ``loss`` is a mean over the local batch whose device average is the
global batch's, so averaging its gradients over devices makes it device-count invariant
like every other gradient; its randomness comes from one key per step.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vae_jax import parallel


class Auxiliary(Protocol):
  def init(self, rng: jax.Array, latent_dim: int) -> dict: ...
  def optimizer(self) -> optax.GradientTransformation: ...
  def model_term(self, params: dict, z: jax.Array) -> jax.Array: ...
  def loss(self, params: dict, z: jax.Array, positions: jax.Array, key: jax.Array,
           axis_name: Optional[str]) -> tuple[jax.Array, dict]: ...


class MLPDiscriminator(nn.Module):
  """disentanglement_lib's ``fc_discriminator``: 6 dense layers of 1,000 with leaky ReLU
  (TensorFlow's slope 0.2), then 2 logits (real q(z), permuted); Glorot-uniform kernels
  and zero biases as ``tf.layers.dense``."""
  width: int = 1000
  depth: int = 6

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    h = z
    for i in range(self.depth):
      h = nn.leaky_relu(nn.Dense(self.width, kernel_init=nn.initializers.glorot_uniform(),
                                 name=f"d{i + 1}")(h), negative_slope=0.2)
    return nn.Dense(2, kernel_init=nn.initializers.glorot_uniform(), name="logits")(h)


def permute_dims(z: jax.Array, key: jax.Array) -> jax.Array:
  """Each column of ``z`` [B, d] shuffled across the batch on its own (``shuffle_codes``):
  every dimension keeps its marginal, their dependence is broken."""
  keys = jax.random.split(key, z.shape[1])
  return jax.vmap(lambda k, column: jax.random.permutation(k, column), out_axes=1)(keys, z.T)


@dataclasses.dataclass(frozen=True)
class FactorDiscriminator:
  """FactorVAE's discriminator with disentanglement_lib's optimizer (Adam 1e-4, beta1 0.5,
  beta2 0.9, eps 1e-8: ``discriminator/AdamOptimizer`` of ``shared.gin``)."""
  width: int = 1000
  depth: int = 6
  learning_rate: float = 1e-4
  b1: float = 0.5
  b2: float = 0.9

  @property
  def module(self) -> MLPDiscriminator:
    return MLPDiscriminator(self.width, self.depth)

  def init(self, rng: jax.Array, latent_dim: int) -> dict:
    return self.module.init(rng, jnp.zeros((1, latent_dim), jnp.float32))["params"]

  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.learning_rate, b1=self.b1, b2=self.b2, eps=1e-8)

  def logits(self, params: dict, z: jax.Array) -> jax.Array:
    return self.module.apply({"params": params}, z)

  def model_term(self, params: dict, z: jax.Array) -> jax.Array:
    """TC per example: logit(real) - logit(permuted) = log D(z) / (1 - D(z))."""
    logits = self.logits(jax.lax.stop_gradient(params), z)
    return logits[:, 0] - logits[:, 1]

  def loss(self, params: dict, z: jax.Array, positions: jax.Array, key: jax.Array,
           axis_name: Optional[str]) -> tuple[jax.Array, dict]:
    """The discriminator's cross-entropy: z labelled real, the permuted batch permuted.

    The permutation is of the *global* batch (gathered, permuted with the step's key,
    this device's rows taken back by their ``positions``), so it is the same on any
    number of devices.
    """
    z = jax.lax.stop_gradient(z)
    everyone = parallel.gather(z, axis_name) if axis_name else z
    permuted = permute_dims(everyone, key)[positions]
    real = jax.nn.log_softmax(self.logits(params, z))[:, 0]
    fake = jax.nn.log_softmax(self.logits(params, permuted))[:, 1]
    loss = -(0.5 * jnp.mean(real) + 0.5 * jnp.mean(fake))
    accuracy = 0.5 * (jnp.mean(real > jnp.log(0.5)) + jnp.mean(fake > jnp.log(0.5)))
    return loss, {"discriminator_loss": loss, "discriminator_accuracy": accuracy}


def get(config: ml_collections.ConfigDict) -> Optional[Auxiliary]:
  """The auxiliary network the config's objective trains, or None."""
  if config.objective.get("regularizer", "beta_vae") == "factor_vae":
    return FactorDiscriminator()
  return None
