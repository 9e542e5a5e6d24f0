"""Factorised categorical latents: N variables of K classes each, as logits [..., N, K].

- ``gumbel_softmax``: the Concrete / Gumbel-softmax relaxation (Jang et al.
  2017; Maddison et al. 2017), softmax((logits + g) / tau) with g ~ Gumbel(0, 1):
  a point of the simplex that gradients flow through, one-hot as tau -> 0, and
  whose argmax is an exact draw of the categorical whatever tau.
- ``straight_through``: the one-hot of that argmax in the forward pass, the
  relaxed sample's gradient in the backward pass.
- ``kl_to_uniform_per_latent``: KL(q || Uniform(K)) in closed form, per variable.
- ``Categorical``: a batch of posteriors q(z|x) over one-hot codes flattened to
  [..., N * K], with ``mean``, ``sample(keys)`` and ``log_prob(z)``: the protocol
  the generic diagnostics (active units, mutual information) read.

Every draw takes one key per example (the leading axis), so example i's noise
does not depend on which other examples share its batch or device.
"""

from __future__ import annotations

import math

import flax
import jax
import jax.numpy as jnp


def gumbel_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Standard Gumbel noise -log(-log u), u ~ U(0, 1) kept off 0 and 1."""
  u = jax.random.uniform(key, shape, minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
  return -jnp.log(-jnp.log(u))


def gumbel_softmax(keys: jax.Array, logits: jax.Array, temperature: jax.Array) -> jax.Array:
  """Relaxed one-hot samples [B, N, K] of q = softmax(logits) at ``temperature`` (> 0)."""
  noise = jax.vmap(lambda k, l: gumbel_noise(k, l.shape))(keys, logits)
  return jax.nn.softmax((logits + noise) / temperature, axis=-1)


def straight_through(relaxed: jax.Array) -> jax.Array:
  """The one-hot argmax of ``relaxed`` forward; the gradient of ``relaxed`` backward."""
  hard = jax.nn.one_hot(jnp.argmax(relaxed, -1), relaxed.shape[-1], dtype=relaxed.dtype)
  return relaxed + jax.lax.stop_gradient(hard - relaxed)


def kl_to_uniform_per_latent(logits: jax.Array) -> jax.Array:
  """KL(Cat(softmax(logits)) || Uniform(K)) = sum_k q_k log q_k + log K, per variable [..., N]."""
  log_q = jax.nn.log_softmax(logits, -1)
  return jnp.sum(jnp.exp(log_q) * log_q, -1) + math.log(logits.shape[-1])


def _one_hot_at(cdf: jax.Array, u: jax.Array) -> jax.Array:
  """One-hot [..., N, K] of the class whose CDF interval holds u [..., N]."""
  classes = jnp.minimum(jnp.sum(cdf < u[..., None], -1), cdf.shape[-1] - 1)
  return jax.nn.one_hot(classes, cdf.shape[-1], dtype=cdf.dtype)


def one_hot_sample(key: jax.Array, logits: jax.Array) -> jax.Array:
  """An exact (discrete) draw of each variable, one-hot [..., N, K].

  By the inverse CDF: one uniform per variable, where the Gumbel-max draw of
  ``jax.random.categorical`` needs K; importance sampling draws millions of
  codes, and on CPU the random bits are most of their cost.
  """
  cdf = jnp.cumsum(jax.nn.softmax(logits, -1), -1)
  return _one_hot_at(cdf, jax.random.uniform(key, logits.shape[:-1], logits.dtype))


@flax.struct.dataclass
class Categorical:
  """q(z|x) = prod_n Cat(z_n; softmax(logits_n)) for a batch: logits [B, N, K].

  Codes are one-hot per variable, flattened to [..., N * K], so they are vectors
  like a Gaussian family's; ``mean`` is E_q[z], the class probabilities. A pytree,
  so per-example terms can carry it through ``lax.map`` and the host gather.
  """
  logits: jax.Array

  @property
  def mean(self) -> jax.Array:
    probs = jax.nn.softmax(self.logits, -1)
    return probs.reshape((*probs.shape[:-2], -1))

  def sample(self, keys: jax.Array) -> jax.Array:
    """One discrete draw per example, [B, N * K] (``keys``: [B])."""
    z = jax.vmap(one_hot_sample)(keys, self.logits)
    return z.reshape((*z.shape[:-2], -1))

  def sample_indexed(self, keys: jax.Array, sample_ids: jax.Array) -> jax.Array:
    """Draws [B, c, N * K]: draw j of example i from the key fold_in(keys[i], sample_ids[j])."""
    cdf = jnp.cumsum(jax.nn.softmax(self.logits, -1), -1)            # once per example
    uniform = jax.vmap(jax.vmap(lambda key, j: jax.random.uniform(
        jax.random.fold_in(key, j), cdf.shape[-2:-1], cdf.dtype), (None, 0)), (0, None))
    z = _one_hot_at(cdf[:, None], uniform(keys, sample_ids))          # [B, c, N, K]
    return z.reshape((*z.shape[:-2], -1))

  def log_prob(self, z: jax.Array) -> jax.Array:
    """log q(z) of one-hot codes [..., N * K], summed over variables; z broadcasts
    against the batch (e.g. [B, 1, N * K] against [B] posteriors, or [M, 1, N * K]
    against all of them)."""
    log_q = jax.nn.log_softmax(self.logits, -1)
    z = z.reshape((*z.shape[:-1], *log_q.shape[-2:]))
    return jnp.sum(z * log_q, axis=(-2, -1))

  def expand_samples(self) -> "Categorical":
    """The same q with a samples axis ([B, 1, N, K]) to score draws [B, c, N * K]."""
    return Categorical(self.logits[:, None])
