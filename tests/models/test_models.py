"""The model families: choice by name, the Gaussian VAE's shapes, variants and learned scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from tests.conftest import make_config
from vae_jax import models
from vae_jax import validation
from vae_jax.core import likelihoods
from vae_jax.data import datasets
from vae_jax.models import gaussian_vae
from vae_jax.models import interface


def _build(config, shape):
  return models.build(config, datasets.DataInfo("test", shape, False, None))


def test_families_are_found_by_module_name_and_unknown_names_are_refused():
  assert "gaussian_vae" in models.available()
  assert models.get("gaussian_vae") is gaussian_vae
  with pytest.raises(validation.ConfigError, match="model.name='nosuch'.*'gaussian_vae'"):
    validation.validate(make_config(model__name="nosuch"))
  assert not {"interface", "layers", "convolutions"} & set(models.available())


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (8, 8, 1)])
def test_encoder_decoder_shapes(arch, shape):
  config = default.get_config()
  config.model.encoder = config.model.decoder = arch
  config.model.width, config.model.depth, config.model.latent_dim = 8, 2, 5
  model = _build(config, shape)
  params = model.init(jax.random.PRNGKey(0))
  batch = {"image": jnp.zeros((3, *shape))}
  q = model.posterior(params, batch)
  assert q.mean.shape == q.logvar.shape == (3, 5)
  p = model.likelihood(params, q.mean)
  assert isinstance(p, likelihoods.Bernoulli) and p.logits.shape == (3, *shape)
  assert model.reconstruct(params, batch).shape == (3, *shape)
  assert model.sample(params, jax.random.PRNGKey(1), 4).shape == (4, *shape)


def test_gaussian_scales_fixed_and_learned():
  config = default.get_config()
  config.model.likelihood, config.model.gaussian_scale = "gaussian_fixed", 0.25
  fixed = _build(config, (8, 8, 1))
  params = fixed.init(jax.random.PRNGKey(0))
  assert "log_scale" not in params
  p = fixed.likelihood(params, jnp.zeros((2, 20)))
  assert isinstance(p, likelihoods.Gaussian) and jnp.allclose(p.log_scale, jnp.log(0.25))

  config.model.likelihood = "gaussian_learned"
  learned = _build(config, (8, 8, 1))
  params = learned.init(jax.random.PRNGKey(0))
  assert params["log_scale"].shape == (8, 8, 1)  # one scale per pixel
  params["log_scale"] = params["log_scale"].at[0, 0, 0].set(1.0)
  log_scale = learned.likelihood(params, jnp.zeros((2, 20))).log_scale
  assert float(log_scale[1, 0, 0, 0]) == 1.0 and float(log_scale[1, 1, 0, 0]) != 1.0


def test_default_model_is_the_classic_mlp_vae():
  model = models.build(default.get_config(), datasets.info("binarized_mnist"))
  params = model.init(jax.random.PRNGKey(0))
  assert params["enc"]["hidden_0"]["kernel"].shape == (784, 500)
  assert params["enc"]["mean"]["kernel"].shape == (500, 20)
  assert params["dec"]["out"]["kernel"].shape == (500, 784)


def test_gated_layers_are_the_linear_part_times_the_sigmoid_of_the_gate():
  """The VampPrior paper's GatedDense: h = (W x + b) * sigmoid(V x + c), in both nets."""
  config = default.get_config()
  config.model.activation, config.model.width, config.model.depth = "gated", 6, 1
  model = _build(config, (4, 4, 1))
  params = model.init(jax.random.PRNGKey(0))
  enc = params["enc"]
  assert enc["hidden_0_gate"]["kernel"].shape == enc["hidden_0"]["kernel"].shape == (16, 6)
  assert params["dec"]["hidden_0_gate"]["kernel"].shape == (config.model.latent_dim, 6)
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 4, 4, 1))
  flat = x.reshape(3, -1)
  dense = lambda p, v: v @ p["kernel"] + p["bias"]
  h = dense(enc["hidden_0"], flat) * jax.nn.sigmoid(dense(enc["hidden_0_gate"], flat))
  q = model.posterior(params, {"image": x})
  np.testing.assert_allclose(q.mean, dense(enc["mean"], h), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(q.logvar, dense(enc["logvar"], h), rtol=1e-5, atol=1e-6)


def test_torch_init_is_pytorchs_linear_default_and_the_default_is_flaxs():
  """init="torch": weights and biases uniform in +-1/sqrt(fan_in), as nn.Linear starts."""
  config = default.get_config()
  config.model.width, config.model.latent_dim = 300, 40
  flax_params = _build(config, (28, 28, 1)).init(jax.random.PRNGKey(0))
  config.model.init = "torch"
  torch_params = _build(config, (28, 28, 1)).init(jax.random.PRNGKey(0))
  for net, layer, fan_in in (("enc", "hidden_0", 784), ("enc", "mean", 300),
                             ("dec", "hidden_0", 40), ("dec", "out", 300)):
    bound = 1 / np.sqrt(fan_in)
    for kind in ("kernel", "bias"):
      values = np.asarray(torch_params[net][layer][kind])
      assert np.abs(values).max() <= bound
      assert np.abs(values.std() - bound / np.sqrt(3)) < 0.1 * bound  # uniform's std
    kernel = np.asarray(flax_params[net][layer]["kernel"])
    assert np.abs(kernel.std() - 1 / np.sqrt(fan_in)) < 0.1 / np.sqrt(fan_in)  # LeCun normal
    assert not np.asarray(flax_params[net][layer]["bias"]).any()


def test_terms_are_the_elbo_of_the_posterior_and_likelihood_the_model_exposes():
  """elbo = log p(x|z) - KL at the z drawn from each example's key; IWAE weights agree."""
  config = default.get_config()
  config.model.width, config.model.latent_dim = 16, 3
  model = _build(config, (8, 8, 1))
  params = model.init(jax.random.PRNGKey(0))
  x = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, (5, 8, 8, 1)).astype(jnp.float32)
  keys = jax.random.split(jax.random.PRNGKey(2), 5)
  terms = model.terms(params, {"image": x}, keys)
  assert set(interface.REQUIRED_TERMS) <= set(terms)
  q = terms[interface.POSTERIOR]
  z = q.sample(keys)
  log_px_z = model.likelihood(params, z).log_prob(x)
  kl = 0.5 * jnp.sum(q.mean**2 + jnp.exp(q.logvar) - 1 - q.logvar, -1)
  np.testing.assert_allclose(terms["elbo"], log_px_z - kl, rtol=1e-6)
  np.testing.assert_allclose(terms["rate"], jnp.sum(terms["kl_per_dim"], -1), rtol=1e-6)
  # Weight j of example i: log p(x, z_ij) - log q(z_ij | x_i) at z_ij from (key_i, j).
  log_w = model.log_weights(params, {"image": x}, keys)(jnp.arange(3))
  z_ij = q.sample_indexed(keys, jnp.arange(3))
  expected = (model.likelihood(params, z_ij).log_prob(x[:, None])
              - 0.5 * jnp.sum(z_ij**2 + jnp.log(2 * jnp.pi), -1)
              - q.expand_samples().log_prob(z_ij))
  np.testing.assert_allclose(log_w, expected, rtol=1e-5)
  assert log_w.shape == (5, 3)


def test_the_model_is_hashable_and_equal_when_built_from_the_same_config():
  """Models are static arguments of compiled functions: equal configs, one compilation."""
  a = models.build(default.get_config(), datasets.info("binarized_mnist"))
  b = models.build(default.get_config(), datasets.info("binarized_mnist"))
  assert a == b and hash(a) == hash(b)
