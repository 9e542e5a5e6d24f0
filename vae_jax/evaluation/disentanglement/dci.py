"""Disentanglement, completeness, informativeness (Eastwood & Williams 2018), as
disentanglement_lib's ``dci``.

For each factor a scikit-learn GradientBoostingClassifier (its defaults, as
disentanglement_lib's) predicts the factor's class from the codes; its feature
importances form the [d, K] importance matrix R. Disentanglement: 1 - the
entropy (base K) of each code's row of R, weighted by the code's share of the
importance; completeness: 1 - the entropy (base d) of each factor's column,
weighted likewise; informativeness: the classifiers' accuracy (train, and on
fresh test draws). Defaults: 10,000 training and 5,000 test draws.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn import ensemble

from vae_jax.data import ground_truth
from vae_jax.evaluation.disentanglement import codes as codes_lib


def importance_matrix(train_codes: np.ndarray, train_factors: np.ndarray,
                      test_codes: np.ndarray, test_factors: np.ndarray,
                      seed: int = 0) -> tuple[np.ndarray, float, float]:
  """(R [d, K], mean train accuracy, mean test accuracy) of one boosted classifier per factor.

  ``seed``: the classifiers' random_state (their feature subsampling is off by
  default, so it only breaks ties), for runs that agree to the last digit.
  """
  importance = np.zeros((train_codes.shape[1], train_factors.shape[1]))
  train_acc, test_acc = [], []
  for k in range(train_factors.shape[1]):
    model = ensemble.GradientBoostingClassifier(random_state=seed)
    model.fit(train_codes, train_factors[:, k])
    importance[:, k] = np.abs(model.feature_importances_)
    train_acc.append(np.mean(model.predict(train_codes) == train_factors[:, k]))
    test_acc.append(np.mean(model.predict(test_codes) == test_factors[:, k]))
  return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def disentanglement(importance: np.ndarray) -> float:
  per_code = 1.0 - scipy.stats.entropy(importance.T + 1e-11, base=importance.shape[1])
  weights = importance if importance.sum() else np.ones_like(importance)
  return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def completeness(importance: np.ndarray) -> float:
  per_factor = 1.0 - scipy.stats.entropy(importance + 1e-11, base=importance.shape[0])
  weights = importance if importance.sum() else np.ones_like(importance)
  return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))


def dci_of(train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray,
           test_factors: np.ndarray, seed: int = 0) -> dict[str, float]:
  importance, train_acc, test_acc = importance_matrix(train_codes, train_factors, test_codes,
                                                      test_factors, seed)
  return {"disentanglement": disentanglement(importance),
          "completeness": completeness(importance),
          "informativeness_train": train_acc, "informativeness_test": test_acc}


def score(sampler: ground_truth.Sampler, representation: codes_lib.Representation,
          random_state: np.random.RandomState, num_train: int = 10_000, num_test: int = 5_000,
          batch_size: int = 16) -> dict[str, float]:
  train = codes_lib.factor_codes(sampler, representation, num_train, random_state, batch_size)
  test = codes_lib.factor_codes(sampler, representation, num_test, random_state, batch_size)
  return dci_of(*train, *test, seed=int(random_state.randint(2**31 - 1)))
