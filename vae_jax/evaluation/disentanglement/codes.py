"""What every disentanglement metric starts from: codes of sampled factors, and their bins.

A representation is a function from observations (uint8 images [B, H, W, C])
to codes [B, d] (the encoder mean, in scoring.py). ``factor_codes`` draws
factors uniformly from the grid with the metric's RandomState, as
disentanglement_lib's ``generate_batch_factor_code`` does, and represents them
in batches. The information-based metrics bin each code dimension into 20
equal-width bins over its range (``histogram_discretize``, disentanglement_lib's
``histogram_discretizer``) and use scikit-learn's discrete mutual information.
Arrays here are [examples, dims] (disentanglement_lib transposes them).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import sklearn.metrics

from vae_jax.data import ground_truth

Representation = Callable[[np.ndarray], np.ndarray]

NUM_BINS = 20  # disentanglement_lib's discretizer.num_bins


def represent(observations: np.ndarray, representation: Representation,
              batch_size: int) -> np.ndarray:
  """Codes [N, d] of observations [N, ...], ``batch_size`` at a time."""
  return np.concatenate([np.asarray(representation(observations[i:i + batch_size]))
                         for i in range(0, len(observations), batch_size)])


def factor_codes(sampler: ground_truth.Sampler, representation: Representation, num: int,
                 random_state: np.random.RandomState, batch_size: int = 16
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(codes [num, d], factors [num, K]) of ``num`` factor combinations drawn uniformly.

  Drawn ``batch_size`` at a time from ``random_state`` (factors, then the
  observations' own randomness), so a seed gives the same draws as the
  metric's defaults promise; represented in bigger batches, which is where the
  time goes.
  """
  factors, observations = [], []
  for start in range(0, num, batch_size):
    f, x = sampler.sample(min(batch_size, num - start), random_state)
    factors.append(f)
    observations.append(x)
  observations = np.concatenate(observations)
  return represent(observations, representation, 1024), np.concatenate(factors)


def histogram_discretize(codes: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
  """Each column binned into ``num_bins`` equal-width bins over its own range (labels 1..bins)."""
  out = np.zeros(codes.shape, np.int64)
  for j in range(codes.shape[1]):
    edges = np.histogram(codes[:, j], num_bins)[1][:-1]
    out[:, j] = np.digitize(codes[:, j], edges)
  return out


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
  """[d, K] mutual information (nats) between each discrete code column and each factor."""
  return np.array([[sklearn.metrics.mutual_info_score(factors[:, k], codes[:, j])
                    for k in range(factors.shape[1])] for j in range(codes.shape[1])])


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
  """[K] entropy (nats) of each discrete factor column: its mutual information with itself."""
  return np.array([sklearn.metrics.mutual_info_score(factors[:, k], factors[:, k])
                   for k in range(factors.shape[1])])
