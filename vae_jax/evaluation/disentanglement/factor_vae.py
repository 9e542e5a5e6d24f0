"""The FactorVAE score (Kim & Mnih 2018), as disentanglement_lib's ``factor_vae_score``.

Codes are scaled by their standard deviation over the data (10,000 draws);
dimensions whose deviation is under 0.05 (collapsed) are pruned. One vote: fix a
factor k at a random value across a batch of 64, and find the active dimension
with the least scaled variance in that batch; the vote is (k, that dimension).
A majority-vote classifier maps each dimension to the factor it most often
answers for; the score is the share of fresh votes it gets right. Defaults:
batch 64, 10,000 training and 5,000 evaluation votes, prune threshold 0.05.
"""

from __future__ import annotations

import numpy as np

from vae_jax.data import ground_truth
from vae_jax.evaluation.disentanglement import codes as codes_lib

PRUNE_THRESHOLD = 0.05


def _votes(sampler: ground_truth.Sampler, representation: codes_lib.Representation,
           batch_size: int, num_points: int, random_state: np.random.RandomState,
           global_variances: np.ndarray, active: np.ndarray) -> np.ndarray:
  """[K, d] vote counts: how often fixing factor k made dimension j the least variable."""
  factor_index = np.zeros(num_points, np.int64)
  observations = []
  for i in range(num_points):
    factor_index[i] = random_state.randint(sampler.num_factors)
    factors = sampler.fix_factor(sampler.sample_factors(batch_size, random_state),
                                 factor_index[i])
    observations.append(sampler.observations(factors, random_state))
  codes = codes_lib.represent(np.concatenate(observations), representation, 1024)
  local = codes.reshape(num_points, batch_size, -1).var(axis=1, ddof=1)
  ratio = local[:, active] / global_variances[active]
  # argmin over the active dimensions, as an index into them (disentanglement_lib's votes).
  votes = np.zeros((sampler.num_factors, global_variances.shape[0]), np.int64)
  np.add.at(votes, (factor_index, np.argmin(ratio, axis=1)), 1)
  return votes


def score(sampler: ground_truth.Sampler, representation: codes_lib.Representation,
          random_state: np.random.RandomState, batch_size: int = 64, num_train: int = 10_000,
          num_eval: int = 5_000, num_variance_estimate: int = 10_000,
          prune_threshold: float = PRUNE_THRESHOLD) -> dict[str, float]:
  """{"train_accuracy", "eval_accuracy", "num_active_dims"} of the majority-vote classifier."""
  _, observations = sampler.sample(num_variance_estimate, random_state)
  codes = codes_lib.represent(observations, representation, 1024)
  global_variances = np.var(codes, axis=0, ddof=1)
  active = np.sqrt(global_variances) >= prune_threshold
  if not active.any():
    return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
  train = _votes(sampler, representation, batch_size, num_train, random_state,
                 global_variances, active)
  classifier = np.argmax(train, axis=0)
  columns = np.arange(train.shape[1])
  evaluation = _votes(sampler, representation, batch_size, num_eval, random_state,
                      global_variances, active)
  return {"train_accuracy": float(train[classifier, columns].sum() / train.sum()),
          "eval_accuracy": float(evaluation[classifier, columns].sum() / evaluation.sum()),
          "num_active_dims": int(active.sum())}
