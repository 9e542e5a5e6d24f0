"""The separated attribute predictability score (Kumar et al. 2018), as disentanglement_lib's
``sap_score`` with discrete factors.

For each (code dimension, factor) pair, a linear SVM (LinearSVC, C = 0.01,
balanced classes) predicts the factor from that one dimension; the score matrix
holds the test accuracies, and SAP is the mean over factors of the gap between
the best and second-best dimension. Defaults: 10,000 training and 5,000 test draws.
"""

from __future__ import annotations

import numpy as np
from sklearn import svm

from vae_jax.data import ground_truth
from vae_jax.evaluation.disentanglement import codes as codes_lib


def score_matrix(train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray,
                 test_factors: np.ndarray) -> np.ndarray:
  """[d, K] test accuracy of a one-dimensional linear SVM per (code, factor)."""
  matrix = np.zeros((train_codes.shape[1], train_factors.shape[1]))
  for j in range(train_codes.shape[1]):
    for k in range(train_factors.shape[1]):
      classifier = svm.LinearSVC(C=0.01, class_weight="balanced")
      classifier.fit(train_codes[:, j:j + 1], train_factors[:, k])
      matrix[j, k] = np.mean(classifier.predict(test_codes[:, j:j + 1]) == test_factors[:, k])
  return matrix


def sap_of(train_codes: np.ndarray, train_factors: np.ndarray, test_codes: np.ndarray,
           test_factors: np.ndarray) -> dict[str, float]:
  top = np.sort(score_matrix(train_codes, train_factors, test_codes, test_factors), axis=0)
  return {"SAP_score": float(np.mean(top[-1] - top[-2]))}


def score(sampler: ground_truth.Sampler, representation: codes_lib.Representation,
          random_state: np.random.RandomState, num_train: int = 10_000, num_test: int = 5_000,
          batch_size: int = 16) -> dict[str, float]:
  train = codes_lib.factor_codes(sampler, representation, num_train, random_state, batch_size)
  test = codes_lib.factor_codes(sampler, representation, num_test, random_state, batch_size)
  return sap_of(*train, *test)
