"""The conditional VAE: labels steer the decoder, bounds of log p(x|y), refusal of unlabelled data."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import cvae
from tests.conftest import SMALL, assert_trees_equal, saved_state, set_fields
from vae_jax import models
from vae_jax import validation
from vae_jax.core import distributions as D
from vae_jax.data import datasets
from vae_jax.evaluation import saved_run
from vae_jax.analysis import gallery
from vae_jax.models import interface
from vae_jax.objectives import iwae
from vae_jax.pictures import conditional
from vae_jax.pictures import images
from vae_jax.training import loop as train


def _config(arg="", **fields):
  return set_fields(cvae.get_config(arg), {"model.width": 16, "model.latent_dim": 2, **fields})


def _model(prior="standard", shape=(4, 4, 1), classes=2):
  config = _config(f"prior={prior}")
  return models.build(config, datasets.DataInfo("test", shape, True, classes))


def test_unlabelled_data_is_refused_before_anything_runs(tmp_path):
  config = _config(**{"data.name": "binarized_mnist"})
  message = r"config.data.name='binarized_mnist' is invalid: .*labels.*'mnist_5k', 'digits'"
  with pytest.raises(validation.ConfigError, match=message):
    validation.validate(config)
  with pytest.raises(validation.ConfigError, match=message):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
  with pytest.raises(validation.ConfigError, match="model.prior='flat'.*'standard', 'learned'"):
    validation.validate(_config(**{"model.prior": "flat"}))


@pytest.mark.slow
def test_decodes_the_class_it_is_given_from_the_same_code():
  """Trained on black (label 0) and white (label 1) squares, one z gives either by label.

  The label says all there is to say, so at the optimum z carries nothing (rate 0);
  early on the encoder also puts the colour in z, which the KL then squeezes out
  (about 1,000 steps here).
  """
  data = datasets.load("squares")
  model = models.build(_config(**{"data.name": "squares"}), data.info)
  assert interface.num_label_classes(model) == 2
  tx = optax.adam(1e-2)
  params = model.init(jax.random.PRNGKey(0))
  opt_state = tx.init(params)
  batch = {"image": jnp.asarray(data.train[:64], jnp.float32),
           "label": jnp.asarray(data.train_labels[:64])}

  @jax.jit
  def step(params, opt_state, key):
    keys = jax.random.split(key, 64)
    loss = lambda p: -jnp.mean(model.terms(p, batch, keys)["elbo"])
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for i in range(1500):
    params, opt_state = step(params, opt_state, jax.random.PRNGKey(i))
  z = model.sample_prior(jax.random.PRNGKey(7), 5)
  black = model.decode(params, z, condition={"label": jnp.zeros(5, jnp.int32)})
  white = model.decode(params, z, condition={"label": jnp.ones(5, jnp.int32)})
  assert float(black.max()) < 0.1 and float(white.min()) > 0.9
  # Without a condition, code i is decoded as class i mod 2.
  both = np.asarray(model.decode(params, z))
  np.testing.assert_allclose(both[0::2], np.asarray(black)[0::2], rtol=1e-6)
  np.testing.assert_allclose(both[1::2], np.asarray(white)[1::2], rtol=1e-6)
  # The class grid: row c is class c, every column one shared z.
  picture = conditional.class_grid(model, params, jax.random.PRNGKey(7), 5)
  assert picture.shape == (2 * 29 + 1, 5 * 29 + 1, 1)
  tile = lambda r, c: picture[1 + 29 * r:29 * (r + 1), 1 + 29 * c:29 * (c + 1)]
  assert all(tile(0, c).max() < 26 and tile(1, c).min() > 229 for c in range(5))


def _learned_prior_model():
  model = _model("learned")
  params = model.init(jax.random.PRNGKey(0))
  params["prior_mean"] = jax.random.normal(jax.random.PRNGKey(1), params["prior_mean"].shape)
  params["prior_logvar"] = 0.5 * jax.random.normal(jax.random.PRNGKey(2),
                                                   params["prior_logvar"].shape)
  image = jax.random.bernoulli(jax.random.PRNGKey(3), 0.4, (3, 4, 4, 1)).astype(jnp.float32)
  return model, params, {"image": image, "label": jnp.array([0, 1, 1])}


def test_learned_prior_kl_is_the_closed_form_of_log_q_minus_log_p():
  model, params, batch = _learned_prior_model()
  q, p = model.posterior(params, batch), model.prior(params, batch["label"])
  exact = np.asarray(model.terms(params, batch, jax.random.split(jax.random.PRNGKey(4), 3))[
      interface.KL_PER_DIM])
  z = jax.jit(q.sample_indexed)(jax.random.split(jax.random.PRNGKey(5), 3), jnp.arange(20_000))
  mc = (D.gaussian_log_prob_per_dim(z, q.mean[:, None], q.logvar[:, None])
        - D.gaussian_log_prob_per_dim(z, p.mean[:, None], p.logvar[:, None]))
  se = np.asarray(mc.std(1)) / np.sqrt(20_000)
  assert np.all(np.abs(np.asarray(mc.mean(1)) - exact) < 4 * se + 1e-4)
  # With the standard prior it is the usual KL to N(0, I).
  standard = _model("standard")
  sp = standard.init(jax.random.PRNGKey(0))
  q0 = standard.posterior(sp, batch)
  np.testing.assert_allclose(
      standard.terms(sp, batch, jax.random.split(jax.random.PRNGKey(4), 3))[interface.KL_PER_DIM],
      q0.kl_per_dim(), rtol=1e-5)


def test_codes_are_standardized_so_the_prior_is_the_same_for_every_class():
  model, params, batch = _learned_prior_model()
  q = model.posterior(params, batch)
  p = model.prior(params, batch["label"])
  codes = model.encode(params, batch)
  np.testing.assert_allclose(codes, (q.mean - p.mean) / jnp.exp(0.5 * p.logvar), rtol=1e-5)
  # reconstruct decodes E_q[z|x,y] itself, through the class's prior.
  direct = model.likelihood(params, q.mean, batch["label"]).mean()
  np.testing.assert_allclose(model.reconstruct(params, batch), direct, rtol=1e-5, atol=1e-6)
  # IWAE of log p(x|y) with the learned prior: at least the ELBO, as a bound should be.
  keys = jax.random.split(jax.random.PRNGKey(6), 3)
  log_px = iwae.log_px(model.log_weights(params, batch, keys), 500, 100)
  elbo = jnp.mean(jax.vmap(lambda k: model.terms(params, batch, k)["elbo"])(
      jax.random.split(jax.random.PRNGKey(8), 3000).reshape(1000, 3, -1)), 0)
  assert np.all(np.asarray(log_px) > np.asarray(elbo))


@pytest.mark.slow
def test_trains_end_to_end_resumes_exactly_and_draws_its_pictures(tmp_path):
  config = set_fields(_config("prior=learned,data=digits"),
                      {**SMALL, "model.width": 16, "eval.num_importance_samples": 10})
  full, crashed = str(tmp_path / "full"), str(tmp_path / "crashed")
  results = train.train_and_evaluate(config, full)
  assert results["test"]["nll"] <= results["test"]["neg_elbo"] + 1.0
  train.train_and_evaluate(config, crashed)
  os.remove(os.path.join(crashed, "results.json"))
  shutil.rmtree(os.path.join(crashed, "checkpoints", "20"))
  assert train.train_and_evaluate(config, crashed)["steps"] == 20
  assert_trees_equal(saved_state(full, config)[0], saved_state(crashed, config)[0])
  spec = gallery.PictureSpec(num_reconstructions=4, num_samples=8, num_encoded=300)
  directory, pictures = gallery.pictures_of_run(saved_run.load_run(full), spec)
  grid = images.load_png(os.path.join(directory, "class_grid.png"))
  assert grid.shape == (10 * 9 + 1, 8 * 9 + 1, 1)                 # 10 classes x 8 codes, 8x8
  analogy = images.load_png(os.path.join(directory, "analogy.png"))
  assert analogy.shape == (10 * 9 + 1, 11 * 9 + 1, 1)              # input + 10 classes per row
  assert "traversals" not in pictures
