"""The BetaVAE score (Higgins et al. 2017), as disentanglement_lib's ``beta_vae_sklearn``.

One training point: pick a factor k uniformly, draw two batches of 64 factor
combinations that agree on factor k only (elsewhere independent), and take the
mean absolute difference of their codes; the label is k. A logistic regression
learns k from such points; the score is its accuracy on fresh points. A code
with one dimension per factor makes the dimension of the fixed factor the one
that differs least, so a linear classifier reaches accuracy 1; defaults: batch
64, 10,000 training and 5,000 evaluation points.
"""

from __future__ import annotations

import numpy as np
from sklearn import linear_model

from vae_jax.data import ground_truth
from vae_jax.evaluation.disentanglement import codes as codes_lib


def _points(sampler: ground_truth.Sampler, representation: codes_lib.Representation,
            batch_size: int, num_points: int, random_state: np.random.RandomState
            ) -> tuple[np.ndarray, np.ndarray]:
  """(features [num_points, d], labels [num_points]): the draws of disentanglement_lib's order."""
  labels = np.zeros(num_points, np.int64)
  first, second = [], []
  for i in range(num_points):
    labels[i] = random_state.randint(sampler.num_factors)
    factors1 = sampler.sample_factors(batch_size, random_state)
    factors2 = sampler.sample_factors(batch_size, random_state)
    factors2[:, labels[i]] = factors1[:, labels[i]]
    first.append(sampler.observations(factors1, random_state))
    second.append(sampler.observations(factors2, random_state))
  codes1 = codes_lib.represent(np.concatenate(first), representation, 1024)
  codes2 = codes_lib.represent(np.concatenate(second), representation, 1024)
  diff = np.abs(codes1 - codes2).reshape(num_points, batch_size, -1)
  return diff.mean(axis=1), labels


def score(sampler: ground_truth.Sampler, representation: codes_lib.Representation,
          random_state: np.random.RandomState, batch_size: int = 64, num_train: int = 10_000,
          num_eval: int = 5_000) -> dict[str, float]:
  """{"train_accuracy", "eval_accuracy"} of the factor classifier."""
  train_x, train_y = _points(sampler, representation, batch_size, num_train, random_state)
  model = linear_model.LogisticRegression(random_state=random_state)
  model.fit(train_x, train_y)
  eval_x, eval_y = _points(sampler, representation, batch_size, num_eval, random_state)
  return {"train_accuracy": float(model.score(train_x, train_y)),
          "eval_accuracy": float(model.score(eval_x, eval_y))}
