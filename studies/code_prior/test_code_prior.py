"""The code prior: autoregressive, normalized, and (slow) the study end to end on a tiny run."""

import itertools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from studies.code_prior import config as study_config
from studies.code_prior import prior as prior_lib
from studies.code_prior import study
from vae_jax.core import checks


def _prior(positions=3, codes=3, width=16):
  prior = prior_lib.CodePrior(positions, codes, width)
  params = prior.init(jax.random.PRNGKey(0), jnp.zeros((1, positions), jnp.int32))["params"]
  # Random output weights too (they start as lecun_normal, biases zero): a generic prior.
  params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(1), p.shape),
                        params)
  return prior, params


def test_logits_of_position_i_depend_on_earlier_codes_only():
  prior, params = _prior(positions=5, codes=4)
  codes = jnp.array([[0, 1, 2, 3, 0]])
  logits = prior.apply({"params": params}, codes)
  for i in range(5):
    changed = codes.at[0, i:].set((codes[0, i:] + 1) % 4)
    np.testing.assert_allclose(prior.apply({"params": params}, changed)[0, :i + 1],
                               logits[0, :i + 1], rtol=1e-6)
    if i + 1 < 5:  # and later positions do see position i
      assert not np.allclose(prior.apply({"params": params}, changed)[0, i + 1:],
                             logits[0, i + 1:])


def test_the_prior_is_normalized_over_every_grid():
  prior, params = _prior(positions=3, codes=3)
  grids = jnp.array(list(itertools.product(range(3), repeat=3)), jnp.int32)
  total = jnp.sum(jnp.exp(prior_lib.log_prob(prior, params, grids)))
  np.testing.assert_allclose(total, 1.0, rtol=1e-5)


def test_samples_follow_the_prior():
  prior, params = _prior(positions=2, codes=3)
  samples = np.asarray(prior_lib.sample(prior, params, jax.random.PRNGKey(2), 20000))
  grids = np.array(list(itertools.product(range(3), repeat=2)))
  expected = np.exp(np.asarray(prior_lib.log_prob(prior, params, jnp.asarray(grids))))
  observed = np.array([np.mean((samples == g).all(1)) for g in grids])
  np.testing.assert_allclose(observed, expected, atol=0.015)   # ~4 standard errors


def test_bad_study_config_is_refused():
  config = study_config.get_config()
  config.steps = 150
  with pytest.raises(checks.ConfigError, match="config.steps=150 is invalid: must be a multiple"):
    study.validate(config)


@pytest.mark.slow
def test_study_end_to_end_on_a_tiny_run(tmp_path):
  from tests.models.test_vqvae import small_config  # pylint: disable=g-import-not-at-top
  from vae_jax.training import loop as train  # pylint: disable=g-import-not-at-top
  run = str(tmp_path / "run")
  train.train_and_evaluate(small_config(num_train_steps=60, eval_every=60,
                                        checkpoint_every=60), run)
  config = study_config.get_config()
  config.update_from_flattened_dict({"run": run, "steps": 300, "width": 64,
                                     "num_samples": 8, "batch_size": 64})
  record = study.run_study(config, str(tmp_path / "prior"))
  for name in study.OUTPUTS:
    assert os.path.getsize(tmp_path / "prior" / name) > 0
  bits = record["code_nll_bits_per_position"]
  assert bits["uniform"] == math.log2(8) and bits["learned"] < bits["uniform"]
  assert record["neg_elbo_nats"]["learned"] < record["neg_elbo_nats"]["uniform"]
  assert json.load(open(tmp_path / "prior" / "code_prior.json"))["step"] == 60
