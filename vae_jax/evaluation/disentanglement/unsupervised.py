"""The unsupervised scores of disentanglement_lib's ``unsupervised_metrics``: no factors needed.

Gaussian total correlation: the KL divergence from N(0, C) to N(0, diag C),
0.5 (sum log C_jj - log det C), for the codes' covariance C: 0 for uncorrelated
codes. Gaussian Wasserstein correlation: 2 tr C - 2 tr sqrt(C diag C) (and
divided by tr C). Mutual information score: the mean pairwise discrete mutual
information between distinct binned codes (20 bins). Default: 10,000 draws.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from vae_jax.data import ground_truth
from vae_jax.evaluation.disentanglement import codes as codes_lib


def gaussian_total_correlation(cov: np.ndarray) -> float:
  return float(0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1]))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
  root = scipy.linalg.sqrtm(cov * np.diag(cov)[:, None])
  return float(2 * np.trace(cov) - 2 * np.real(np.trace(root)))


def unsupervised_of(codes: np.ndarray, num_bins: int = codes_lib.NUM_BINS) -> dict[str, float]:
  """The scores of codes [N, d], d >= 2."""
  cov = np.cov(codes, rowvar=False)
  num_codes = codes.shape[1]
  binned = codes_lib.histogram_discretize(codes, num_bins)
  info = codes_lib.discrete_mutual_info(binned, binned)
  np.fill_diagonal(info, 0.0)
  wasserstein = gaussian_wasserstein_correlation(cov)
  return {"gaussian_total_correlation": gaussian_total_correlation(cov),
          "gaussian_wasserstein_correlation": wasserstein,
          "gaussian_wasserstein_correlation_norm": wasserstein / float(np.trace(cov)),
          "mutual_info_score": float(info.sum() / (num_codes**2 - num_codes))}


def score(sampler: ground_truth.Sampler, representation: codes_lib.Representation,
          random_state: np.random.RandomState, num_train: int = 10_000,
          batch_size: int = 16) -> dict[str, float]:
  codes, _ = codes_lib.factor_codes(sampler, representation, num_train, random_state,
                                    batch_size)
  return unsupervised_of(codes)
