"""Encoders and decoders: shapes, variants and the learned scale."""

import jax
import jax.numpy as jnp
import pytest

from configs import default
from vae_jax.models import gaussian_vae as models


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (8, 8, 1)])
def test_encoder_decoder_shapes(arch, shape):
  config = default.get_config().model
  config.encoder = config.decoder = arch
  config.width, config.depth, config.latent_dim = 8, 2, 5
  model = models.build_model(config, shape)
  params = models.init_params(model, jax.random.PRNGKey(0))
  x = jnp.zeros((3, *shape))
  mean, logvar = models.encode(model, params, x)
  assert mean.shape == logvar.shape == (3, 5)
  loc, log_scale = models.decode(model, params, mean)
  assert loc.shape == (3, *shape) and log_scale is None


def test_gaussian_scales_fixed_and_learned():
  config = default.get_config().model
  config.likelihood, config.gaussian_scale = "gaussian_fixed", 0.25
  fixed = models.build_model(config, (8, 8, 1))
  params = models.init_params(fixed, jax.random.PRNGKey(0))
  assert "log_scale" not in params
  _, log_scale = models.decode(fixed, params, jnp.zeros((2, 20)))
  assert jnp.allclose(log_scale, jnp.log(0.25))

  config.likelihood = "gaussian_learned"
  learned = models.build_model(config, (8, 8, 1))
  params = models.init_params(learned, jax.random.PRNGKey(0))
  assert params["log_scale"].shape == (8, 8, 1)  # one scale per pixel
  params["log_scale"] = params["log_scale"].at[0, 0, 0].set(1.0)
  _, log_scale = models.decode(learned, params, jnp.zeros((2, 20)))
  assert float(log_scale[1, 0, 0, 0]) == 1.0 and float(log_scale[1, 1, 0, 0]) != 1.0


def test_default_model_is_the_classic_mlp_vae():
  model = models.build_model(default.get_config().model, (28, 28, 1))
  params = models.init_params(model, jax.random.PRNGKey(0))
  assert params["enc"]["hidden_0"]["kernel"].shape == (784, 500)
  assert params["enc"]["mean"]["kernel"].shape == (500, 20)
  assert params["dec"]["out"]["kernel"].shape == (500, 784)
