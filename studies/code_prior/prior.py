"""An autoregressive prior over a grid of discrete codes: MADE with categorical outputs.

The model of ``vae_jax.models.layers.AutoregressiveDecoder`` (Germain et al.
2015's masks, ``layers.made_masks``, raster order) with K-way softmax outputs in
place of Bernoulli ones: log p(c) = sum_i log p(c_i | c_<i) for codes c [P] in
0..K-1. An input one-hot vector times the masked weights is a row lookup, so
the input layer costs P gathers, not a [P K, width] product.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae_jax.models import layers


class CodePrior(nn.Module):
  """codes [B, P] (int) -> logits [B, P, K] of p(c_i | c_<i)."""
  num_positions: int
  num_codes: int
  width: int = 512
  activation: str = "relu"

  def setup(self):
    p, k = self.num_positions, self.num_codes
    mask_in, mask_out = layers.made_masks(p, self.width)
    self.mask_in = jnp.asarray(mask_in)[:, None, :]                 # [P, 1, width]
    self.mask_out = jnp.asarray(np.repeat(mask_out[:, :, None], k, axis=2))  # [width, P, K]
    self.w_in = self.param("w_in", nn.initializers.normal(1.0 / np.sqrt(p)), (p, k, self.width))
    self.b_in = self.param("b_in", nn.initializers.zeros, (self.width,))
    self.w_out = self.param("w_out", nn.initializers.lecun_normal(), (self.width, p, k))
    self.b_out = self.param("b_out", nn.initializers.zeros, (p, k))

  def __call__(self, codes: jax.Array) -> jax.Array:
    w_in = self.w_in * self.mask_in
    rows = w_in[jnp.arange(self.num_positions), codes]               # [B, P, width]
    h = layers.ACTIVATIONS[self.activation](rows.sum(1) + self.b_in)
    return jnp.einsum("bh,hpk->bpk", h, self.w_out * self.mask_out) + self.b_out


def log_prob(prior: CodePrior, params, codes: jax.Array) -> jax.Array:
  """log p(codes) [B] in nats, codes [B, P]."""
  logits = jax.nn.log_softmax(prior.apply({"params": params}, codes))
  return jnp.take_along_axis(logits, codes[..., None], axis=-1)[..., 0].sum(-1)


def sample(prior: CodePrior, params, rng: jax.Array, num: int) -> jax.Array:
  """Ancestral samples [num, P]: position i drawn from p(c_i | c_<i), one pass per position."""
  def step(codes, inputs):
    i, key = inputs
    logits = prior.apply({"params": params}, codes)[:, i]
    return codes.at[:, i].set(jax.random.categorical(key, logits).astype(codes.dtype)), None
  init = jnp.zeros((num, prior.num_positions), jnp.int32)
  keys = jax.random.split(rng, prior.num_positions)
  codes, _ = jax.lax.scan(step, init, (jnp.arange(prior.num_positions), keys))
  return codes


def train(prior: CodePrior, codes: np.ndarray, *, steps: int, batch_size: int,
          learning_rate: float, seed: int,
          report: Callable[[int, float], None] = lambda step, loss: None):
  """Fits the prior to ``codes`` [N, P] by maximum likelihood (Adam); returns params."""
  rng = jax.random.PRNGKey(seed)
  params = prior.init(rng, jnp.zeros((1, prior.num_positions), jnp.int32))["params"]
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)
  data = jnp.asarray(codes, jnp.int32)

  @jax.jit
  def chunk(params, opt_state, start):
    def one(carry, step):
      params, opt_state = carry
      idx = jax.random.randint(jax.random.fold_in(rng, step), (batch_size,), 0, len(data))
      loss, grads = jax.value_and_grad(
          lambda p: -jnp.mean(log_prob(prior, p, data[idx])))(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), loss
    (params, opt_state), losses = jax.lax.scan(one, (params, opt_state),
                                               start + jnp.arange(100))
    return params, opt_state, losses.mean()

  for start in range(0, steps, 100):
    params, opt_state, loss = chunk(params, opt_state, start)
    report(start + 100, float(loss))
  return params
