"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib's
``modularity_explicitness``.

Modularity: from the binned codes' mutual information with the factors, each
code's deviation from having all its (squared) information in one factor;
1 - deviation, averaged over codes (a code with no information scores 0).
Explicitness: per factor, a one-vs-rest logistic regression on the standardised
codes and the ROC AUC of its class probabilities (sklearn's roc_auc_score over
one-hot labels), averaged over factors. Defaults: 10,000 training and 5,000 test
draws, 20 bins.
"""

from __future__ import annotations

import numpy as np
from sklearn import linear_model
from sklearn import metrics
from sklearn import preprocessing

from vae_jax.data import ground_truth
from vae_jax.evaluation.disentanglement import codes as codes_lib


def modularity(mutual_information: np.ndarray) -> float:
  """Mean over codes of 1 - (sum of squared MI but the largest) / (largest * (K - 1))."""
  squared = np.square(mutual_information)
  largest = squared.max(axis=1)
  with np.errstate(divide="ignore", invalid="ignore"):
    deviation = (squared.sum(axis=1) - largest) / (largest * (squared.shape[1] - 1.0))
  return float(np.mean(np.where(largest == 0.0, 0.0, 1.0 - deviation)))


def explicitness_per_factor(train_codes: np.ndarray, train_labels: np.ndarray,
                            test_codes: np.ndarray, test_labels: np.ndarray
                            ) -> tuple[float, float]:
  """(train ROC AUC, test ROC AUC) of a logistic regression predicting one factor.

  The macro average over the classes the classifier knows (one-hot columns of
  its ``classes_``), as disentanglement_lib's with every class drawn; with few
  draws, classes absent from one side are left out rather than failing.
  """
  classifier = linear_model.LogisticRegression().fit(train_codes, train_labels)

  def auc(codes: np.ndarray, labels: np.ndarray) -> float:
    onehot = preprocessing.label_binarize(labels, classes=classifier.classes_)
    if len(classifier.classes_) == 2:
      onehot = np.column_stack([1 - onehot[:, 0], onehot[:, 0]])
    both = (onehot.min(axis=0) == 0) & (onehot.max(axis=0) == 1)
    return float(metrics.roc_auc_score(onehot[:, both],
                                       classifier.predict_proba(codes)[:, both]))
  return auc(train_codes, train_labels), auc(test_codes, test_labels)


def modularity_explicitness_of(train_codes: np.ndarray, train_factors: np.ndarray,
                               test_codes: np.ndarray, test_factors: np.ndarray,
                               num_bins: int = codes_lib.NUM_BINS) -> dict[str, float]:
  info = codes_lib.discrete_mutual_info(
      codes_lib.histogram_discretize(train_codes, num_bins), train_factors)
  mean, std = train_codes.mean(axis=0), train_codes.std(axis=0)
  train_norm, test_norm = (train_codes - mean) / std, (test_codes - mean) / std
  aucs = np.array([explicitness_per_factor(train_norm, train_factors[:, k], test_norm,
                                           test_factors[:, k])
                   for k in range(train_factors.shape[1])])
  return {"modularity_score": modularity(info),
          "explicitness_score_train": float(aucs[:, 0].mean()),
          "explicitness_score_test": float(aucs[:, 1].mean())}


def score(sampler: ground_truth.Sampler, representation: codes_lib.Representation,
          random_state: np.random.RandomState, num_train: int = 10_000, num_test: int = 5_000,
          batch_size: int = 16) -> dict[str, float]:
  train = codes_lib.factor_codes(sampler, representation, num_train, random_state, batch_size)
  test = codes_lib.factor_codes(sampler, representation, num_test, random_state, batch_size)
  return modularity_explicitness_of(*train, *test)
