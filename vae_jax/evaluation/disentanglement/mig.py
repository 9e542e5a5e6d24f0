"""The mutual information gap (Chen et al. 2018), as disentanglement_lib's ``mig``.

Each code dimension is binned (20 equal-width bins); for each factor, the gap
between the two code dimensions that share the most information with it,
divided by the factor's entropy, averaged over factors. One dimension per factor
scores near 1; a factor spread over two dimensions scores near 0 for that factor
(both carry it). Default: 10,000 draws.
"""

from __future__ import annotations

import numpy as np

from vae_jax.data import ground_truth
from vae_jax.evaluation.disentanglement import codes as codes_lib


def mig_of(codes: np.ndarray, factors: np.ndarray,
           num_bins: int = codes_lib.NUM_BINS) -> dict[str, float]:
  """{"discrete_mig", "mutual_information" [d][K] (nats), "factor_entropy" [K]} of codes
  [N, d] (d >= 2) against discrete factors [N, K]; the matrix labels traversals."""
  info = codes_lib.discrete_mutual_info(codes_lib.histogram_discretize(codes, num_bins), factors)
  top = np.sort(info, axis=0)[::-1]
  entropy = codes_lib.discrete_entropy(factors)
  return {"discrete_mig": float(np.mean((top[0] - top[1]) / entropy)),
          "mutual_information": info.tolist(), "factor_entropy": entropy.tolist()}


def score(sampler: ground_truth.Sampler, representation: codes_lib.Representation,
          random_state: np.random.RandomState, num_train: int = 10_000,
          batch_size: int = 16) -> dict[str, float]:
  codes, factors = codes_lib.factor_codes(sampler, representation, num_train, random_state,
                                          batch_size)
  return mig_of(codes, factors)
