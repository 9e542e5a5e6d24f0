"""A plain hand-written JAX training loop of the MLP VAE: the benchmark's reference row.

What the project's train step is measured against: the same model (an MLP
encoder to the mean and log-variance, an MLP decoder to Bernoulli logits, the
analytic KL), the same optimizer (Adam), batch and data (uint8 images on the
device, one shuffled batch per step), written as one would write it by hand for
this model alone: parameters in a dict, the steps in one ``lax.scan``, one
normal draw per batch, the loss as the only output. It has none of what the
project's step adds for every family and run: per-example keys (device-count
invariance), the per-example terms and their metrics, the gradient norm (the
non-finite guard), the device collective, optimizer options. It uses the same
exact, cheap softplus as the project (``jax.nn.softplus`` is several times
slower on XLA:CPU), so the comparison is of the step's structure, not of one
formula.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

Layer = tuple[jax.Array, jax.Array]
Params = dict[str, Any]  # "enc", "dec": lists of layers; "mean", "logvar", "out": layers
Carry = tuple[Params, optax.OptState, jax.Array, jax.Array]


def unsupported(config: ml_collections.ConfigDict) -> str | None:
  """Why ``config`` has no hand-written reference (None if it has one)."""
  m = config.model
  wanted = {"encoder": "mlp", "decoder": "mlp", "likelihood": "bernoulli", "activation": "relu"}
  wrong = [f"model.{k}={m.get(k)!r}" for k, v in wanted.items() if m.get(k) != v]
  if config.objective.kl_estimator != "analytic":
    wrong.append(f"objective.kl_estimator={config.objective.kl_estimator!r}")
  if config.optim.optimizer != "adam":
    wrong.append(f"optim.optimizer={config.optim.optimizer!r}")
  return ("the reference is an MLP VAE with Bernoulli pixels, analytic KL and Adam; not "
          + ", ".join(wrong)) if wrong else None


def _dense(rng: jax.Array, fan_in: int, fan_out: int) -> Layer:
  return (jax.random.normal(rng, (fan_in, fan_out)) / math.sqrt(fan_in), jnp.zeros((fan_out,)))


def init_params(rng: jax.Array, pixels: int, width: int, depth: int, latent_dim: int) -> Params:
  """LeCun-normal weights, zero biases: pixels -> width x depth -> (mean, logvar) -> ... -> pixels."""
  keys = iter(jax.random.split(rng, 2 * depth + 3))
  enc_sizes, dec_sizes = [pixels] + [width] * depth, [latent_dim] + [width] * depth
  return {"enc": [_dense(next(keys), i, o) for i, o in zip(enc_sizes, enc_sizes[1:])],
          "mean": _dense(next(keys), enc_sizes[-1], latent_dim),
          "logvar": _dense(next(keys), enc_sizes[-1], latent_dim),
          "dec": [_dense(next(keys), i, o) for i, o in zip(dec_sizes, dec_sizes[1:])],
          "out": _dense(next(keys), dec_sizes[-1], pixels)}


def loss(params: Params, x: jax.Array, eps: jax.Array) -> jax.Array:
  """Negative ELBO of a batch x [B, pixels] in {0, 1}, with z = mean + sigma * eps."""
  h = x
  for w, b in params["enc"]:
    h = jax.nn.relu(h @ w + b)
  mean = h @ params["mean"][0] + params["mean"][1]
  logvar = h @ params["logvar"][0] + params["logvar"][1]
  h = mean + jnp.exp(0.5 * logvar) * eps
  for w, b in params["dec"]:
    h = jax.nn.relu(h @ w + b)
  logits = h @ params["out"][0] + params["out"][1]
  softplus = jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  distortion = jnp.sum(softplus - x * logits, axis=-1)
  rate = 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=-1)
  return jnp.mean(distortion + rate)


def make_chunk(tx: optax.GradientTransformation, batch: int, latent_dim: int,
               num_steps: int) -> Callable[[Carry, jax.Array, jax.Array], tuple[Carry, jax.Array]]:
  """fn((params, opt_state, step, key), images [N, pixels] uint8, perm [N]) -> (carry, losses).

  ``num_steps`` steps in one scan; step i trains on ``perm``'s batch i (mod the
  batches in it) with one normal draw for the whole batch.
  """

  def chunk(carry: Carry, images: jax.Array, perm: jax.Array) -> tuple[Carry, jax.Array]:
    batches = perm.shape[0] // batch

    def step(carry: Carry, _) -> tuple[Carry, jax.Array]:
      params, opt_state, i, key = carry
      idx = jax.lax.dynamic_slice(perm, ((i % batches) * batch,), (batch,))
      x = jnp.take(images, idx, axis=0).astype(jnp.float32)
      eps = jax.random.normal(jax.random.fold_in(key, i), (batch, latent_dim))
      value, grads = jax.value_and_grad(loss)(params, x, eps)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state, i + 1, key), value

    return jax.lax.scan(step, carry, None, length=num_steps)

  return chunk


def start(config: ml_collections.ConfigDict, images: np.ndarray,
          tx: optax.GradientTransformation) -> tuple[Carry, jax.Array, jax.Array]:
  """(carry, images [N, pixels], perm) on the default device, from ``config.seed``."""
  flat = images.reshape(images.shape[0], -1)
  rng = jax.random.PRNGKey(config.seed)
  params = init_params(rng, flat.shape[1], config.model.width, config.model.depth,
                       config.model.latent_dim)
  perm = jax.random.permutation(jax.random.fold_in(rng, 1), flat.shape[0]).astype(jnp.int32)
  carry = (params, tx.init(params), jnp.zeros((), jnp.int32), jax.random.fold_in(rng, 2))
  return carry, jnp.asarray(flat), perm
