"""The disentanglement metrics on constructed codes whose answers are known.

A small factor grid (4 factors) whose "observations" are the factor classes
themselves; each representation is a function of them: the factors (identity,
then permuted and rescaled), pure noise, one factor copied onto two codes, two
factors mixed by a rotation, and one factor left out.
"""

import numpy as np
import pytest

from vae_jax.data import ground_truth
from vae_jax.evaluation.disentanglement import beta_vae
from vae_jax.evaluation.disentanglement import codes as codes_lib
from vae_jax.evaluation.disentanglement import dci
from vae_jax.evaluation.disentanglement import factor_vae
from vae_jax.evaluation.disentanglement import mig
from vae_jax.evaluation.disentanglement import modularity
from vae_jax.evaluation.disentanglement import sap
from vae_jax.evaluation.disentanglement import unsupervised

GRID = ground_truth.FactorGrid(("a", "b", "c", "d"), (3, 4, 5, 6))
SAMPLER = ground_truth.Sampler(GRID, lambda f, key: f.astype(np.float64), (4,))
PERM = np.array([2, 0, 3, 1])
SCALE = np.array([3.0, -0.5, 10.0, 0.2])


def identity(x):
  return np.asarray(x, np.float64)


def permuted(x):
  return identity(x)[:, PERM] * SCALE + 1.0


NOISE = np.random.RandomState(0).randn(GRID.num_examples, 4)


def noise(x):  # a fixed draw per combination: independent of the factors
  return NOISE[GRID.index_of(x)]


def copied(x):  # factor a on two codes
  x = identity(x)
  return np.concatenate([x, x[:, :1] * 2.0], axis=1)


def mixed(x):  # factors a and b rotated into two codes, each holding both
  x = identity(x) / np.array([3.0, 4.0, 5.0, 6.0])
  return np.stack([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1], x[:, 2], x[:, 3]], axis=1)


def missing(x):  # factor d left out: a constant in its place
  x = identity(x).copy()
  x[:, 3] = 0.0
  return x


def codes(representation, num, seed=0):
  return codes_lib.factor_codes(SAMPLER, representation, num, np.random.RandomState(seed))


@pytest.fixture(scope="module")
def labelled():
  """(train factors, test factors), 800 and 300 draws."""
  return codes(identity, 800, 0)[1], codes(identity, 300, 1)[1]


def test_grid_index_round_trip_and_bases():
  index = np.arange(GRID.num_examples)
  assert np.array_equal(GRID.index_of(GRID.factors_of(index)), index)
  assert list(GRID.bases) == [120, 30, 6, 1]
  assert np.array_equal(GRID.factors_of(GRID.num_examples - 1), [2, 3, 4, 5])


@pytest.mark.parametrize("representation", [identity, permuted])
def test_factors_themselves_score_at_the_top(representation, labelled):
  train, test = labelled
  rs = np.random.RandomState
  assert beta_vae.score(SAMPLER, representation, rs(0), num_train=200,
                        num_eval=100)["eval_accuracy"] == 1.0
  assert factor_vae.score(SAMPLER, representation, rs(0), num_train=200, num_eval=100,
                          num_variance_estimate=500)["eval_accuracy"] == 1.0
  z_train, z_test = representation(train), representation(test)
  assert mig.mig_of(z_train, train)["discrete_mig"] > 0.95
  # A one-dimensional linear SVM (C = 0.01) cannot tell apart all classes of a
  # factor, so even the factors themselves stay well under 1.
  assert sap.sap_of(z_train, train, z_test, test)["SAP_score"] > 0.3
  me = modularity.modularity_explicitness_of(z_train, train, z_test, test)
  assert me["modularity_score"] > 0.95 and me["explicitness_score_test"] > 0.9
  # Independent factors: their codes are uncorrelated, so the Gaussian TC is ~0.
  assert unsupervised.unsupervised_of(z_train)["gaussian_total_correlation"] < 0.01


def test_noise_scores_near_zero(labelled):
  train, test = labelled
  rs = np.random.RandomState
  # Chance for the classifiers of which factor was fixed: 1/4.
  assert beta_vae.score(SAMPLER, noise, rs(0), num_train=200, num_eval=200)[
      "eval_accuracy"] < 0.45
  assert factor_vae.score(SAMPLER, noise, rs(0), num_train=200, num_eval=200,
                          num_variance_estimate=500)["eval_accuracy"] < 0.45
  z_train, z_test = noise(train), noise(test)
  assert mig.mig_of(z_train, train)["discrete_mig"] < 0.05
  assert sap.sap_of(z_train, train, z_test, test)["SAP_score"] < 0.05


def test_a_factor_on_two_codes_lowers_mig_not_modularity(labelled):
  train, test = labelled
  one, two = identity(train), copied(train)
  assert mig.mig_of(two, train)["discrete_mig"] == pytest.approx(
      mig.mig_of(one, train)["discrete_mig"] - 0.25, abs=0.02)  # factor a's gap is 0
  # Each copy still holds one factor only: modularity does not change ...
  me_two = modularity.modularity_explicitness_of(two, train, copied(test), test)
  assert me_two["modularity_score"] > 0.95
  # ... while codes that mix two factors lower both.
  z_mixed = mixed(train)
  me_mixed = modularity.modularity_explicitness_of(z_mixed, train, mixed(test), test)
  me_one = modularity.modularity_explicitness_of(one, train, identity(test), test)
  assert me_mixed["modularity_score"] < me_one["modularity_score"] - 0.05
  assert mig.mig_of(z_mixed, train)["discrete_mig"] < mig.mig_of(one, train)["discrete_mig"] - 0.3


@pytest.mark.slow  # 4 x 4 boosted-tree classifiers
def test_dci_known_answers(labelled):
  train, test = labelled
  for representation in (identity, permuted):
    scores = dci.dci_of(representation(train), train, representation(test), test)
    assert scores["disentanglement"] > 0.9 and scores["completeness"] > 0.9
    assert scores["informativeness_test"] == 1.0
  scores = dci.dci_of(noise(train), train, noise(test), test)
  assert scores["disentanglement"] < 0.1 and scores["completeness"] < 0.1
  part = dci.dci_of(missing(train), train, missing(test), test)
  # Factor d (6 classes) is now guessed: its accuracy falls from 1 to ~1/6.
  assert part["informativeness_test"] == pytest.approx((3 + 1 / 6) / 4, abs=0.05)


def test_a_missing_factor_lowers_explicitness(labelled):
  train, test = labelled
  me_full = modularity.modularity_explicitness_of(identity(train), train, identity(test), test)
  with np.errstate(all="ignore"):
    x_train, x_test = missing(train)[:, :3], missing(test)[:, :3]
  me_part = modularity.modularity_explicitness_of(x_train, train, x_test, test)
  assert me_part["explicitness_score_test"] < me_full["explicitness_score_test"] - 0.08


def test_reruns_agree():
  first = factor_vae.score(SAMPLER, permuted, np.random.RandomState(3), num_train=50,
                           num_eval=50, num_variance_estimate=200)
  again = factor_vae.score(SAMPLER, permuted, np.random.RandomState(3), num_train=50,
                           num_eval=50, num_variance_estimate=200)
  assert first == again


def test_closed_forms():
  # Gaussian TC of a 2-D Gaussian with correlation r: -0.5 log(1 - r^2).
  r = 0.6
  cov = np.array([[2.0, r * np.sqrt(2.0 * 3.0)], [r * np.sqrt(6.0), 3.0]])
  assert unsupervised.gaussian_total_correlation(cov) == pytest.approx(-0.5 * np.log(1 - r**2))
  assert unsupervised.gaussian_wasserstein_correlation(np.diag([2.0, 3.0])) == pytest.approx(0.0)
  # DCI of a diagonal importance matrix is 1, of a uniform one 0.
  assert dci.disentanglement(np.eye(4)) == pytest.approx(1.0)
  assert dci.completeness(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-9)
  assert modularity.modularity(np.eye(3)) == 1.0
  assert modularity.modularity(np.zeros((2, 3))) == 0.0
