"""How much of its latent space a VAE uses: active units, mutual information, collapse.

All functions take per-example posteriors of a whole split (host arrays, or a
family's posterior object: anything with ``mean``, ``sample(keys)`` and
``log_prob(z)`` that broadcasts) and return plain numbers, in nats where they
have a unit.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np


ACTIVE_UNIT_THRESHOLD = 0.01


def active_units(posterior_mean: np.ndarray,
                 threshold: float = ACTIVE_UNIT_THRESHOLD) -> tuple[int, np.ndarray]:
  """Dimensions d with Cov_x(E_q[z_d | x]) > threshold (Burda et al. 2015, Sec. 5.2).

  Returns (count, per-dimension variance of the posterior mean over the data).
  """
  activity = np.var(np.asarray(posterior_mean, np.float64), axis=0)
  return int(np.sum(activity > threshold)), activity


def mutual_information(posterior: Any, seed: int, block: int = 128) -> float:
  """I(x; z) under q(x, z) = p_data(x) q(z|x), in nats.

  I = E_x KL(q(z|x) || p(z)) - KL(q(z) || p(z)) (Hoffman & Johnson 2016, "ELBO
  surgery"), estimated as in He et al. 2019 ("Lagging inference networks"):
  (1/N) sum_i [log q(z_i|x_i) - log (1/N) sum_j q(z_i|x_j)], z_i ~ q(z|x_i),
  with the aggregate posterior q(z) the mixture over the N examples given.
  It is bounded by log N; use the whole test split.
  """
  posterior = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), posterior)
  n = posterior.mean.shape[0]
  keys = jax.random.split(jax.random.PRNGKey(seed), n)
  z = posterior.sample(keys)
  log_q_own = posterior.log_prob(z)
  padded = -(-n // block) * block
  z_blocks = jnp.pad(z, ((0, padded - n), (0, 0))).reshape(padded // block, block, -1)

  @jax.jit
  def log_aggregate(z_blocks):
    def one_block(zb):  # log (1/N) sum_j q(z_b | x_j) for each z_b in the block
      log_q = posterior.log_prob(zb[:, None])                        # [block, N]
      return jax.nn.logsumexp(log_q, axis=1) - math.log(n)
    return jax.lax.map(one_block, z_blocks).reshape(-1)[:n]

  return float(np.mean(np.asarray(log_q_own - log_aggregate(z_blocks), np.float64)))


def collapse_alarm(num_active: Optional[int], rate: float,
                   rate_floor: float) -> Optional[str]:
  """A plain-words reason when the posterior has collapsed, else None.

  ``num_active``: None for a family without a posterior to count units of.
  """
  if num_active == 0:
    return (f"posterior collapse: no active latent units (no dimension's posterior mean "
            f"varies over the data by more than {ACTIVE_UNIT_THRESHOLD}); rate={rate:.4g} nats")
  if rate < rate_floor:
    return (f"posterior collapse: rate KL(q(z|x)||p(z)) = {rate:.4g} nats is below the floor "
            f"eval.collapse_rate_floor={rate_floor}")
  return None
