"""Bad config values fail before any data loading or compilation, naming the field."""

import os

import pytest

from configs import beta as beta_config
from configs import default
from vae_jax.data import datasets
from vae_jax import parallel
from vae_jax.training import loop as train
from vae_jax import validation

BAD = [
    ("objective.beta", -1.0, ">= 0"),
    ("model.latent_dim", 0, ">= 1"),
    ("data.name", "mnits", "'binarized_mnist', 'mnist'"),
    ("model.encoder", "transformer", "'mlp', 'conv'"),
    ("model.likelihood", "poisson", "'bernoulli', 'gaussian_fixed', 'gaussian_learned'"),
    ("model.activation", "sigmoidd", "'relu'"),
    ("objective.kl_estimator", "exact", "'analytic', 'mc'"),
    ("optim.learning_rate", 0.0, "> 0"),
    ("optim.optimizer", "lion", "'adam', 'adamw', 'sgd'"),
    ("objective.free_bits", -0.5, ">= 0"),
    ("num_train_steps", 0, "-1 to use num_epochs"),
    ("batch_size", 0, ">= 1"),
    ("model.depth", 5, "divide by 2**depth"),  # with the conv encoder below
    ("data.preprocessing", "binary", "not binary"),  # with data.name=mnist below
    ("data.fallback", "cifar10", "'' (no fallback)"),
    ("objective.beta", float("nan"), "finite"),
    ("objective.beta", float("inf"), "finite"),
    ("optim.learning_rate", float("nan"), "finite"),
    ("model.name", "nosuch", "'gaussian_vae'"),
    ("model.activation", "gated", "need model.encoder and model.decoder 'mlp'"),  # conv below
    ("model.init", "xavier", "'lecun_normal', 'torch'"),
]


def _config(field, value):
  config = default.get_config()
  if field == "model.depth" or (field, value) == ("model.activation", "gated"):
    config.model.encoder = "conv"
  if field == "data.preprocessing":
    config.data.name = "mnist"
  config.update_from_flattened_dict({field: value})
  return config


@pytest.mark.parametrize("field,value,allowed", BAD)
def test_bad_value_fails_before_data_or_compilation(field, value, allowed, tmp_path,
                                                    monkeypatch):
  def must_not_run(*args, **kwargs):
    raise AssertionError("reached data loading or compilation")
  monkeypatch.setattr(datasets, "load", must_not_run)
  monkeypatch.setattr(parallel, "data_parallel", must_not_run)
  workdir = tmp_path / "run"
  with pytest.raises(validation.ConfigError) as err:
    train.train_and_evaluate(_config(field, value), str(workdir))
  assert f"config.{field}=" in str(err.value) and allowed in str(err.value)
  assert not os.path.exists(workdir)  # nothing written for a config that cannot run


def test_gaussian_likelihood_needs_continuous_pixels():
  config = default.get_config()
  config.model.likelihood = "gaussian_fixed"
  config.data.name, config.data.preprocessing = "mnist", "dynamic"
  with pytest.raises(validation.ConfigError, match="config.data.preprocessing='dynamic'"):
    validation.validate(config)
  config.data.preprocessing = "auto"
  validation.validate(config)  # auto -> dequantize


@pytest.mark.parametrize("likelihood,preprocessing,field", [
    ("gaussian_learned", "auto", "data.name='binarized_mnist'"),  # 0/1 read as 8-bit levels
    ("bernoulli", "dynamic", "data.preprocessing='dynamic'"),     # 0/1 read as 8-bit levels
])
def test_binary_data_is_not_read_as_intensities(likelihood, preprocessing, field):
  config = default.get_config()
  config.model.likelihood, config.data.preprocessing = likelihood, preprocessing
  with pytest.raises(validation.ConfigError, match=field + ".*already binary"):
    validation.validate(config)


def test_defaults_are_valid_and_preprocessing_resolves():
  validation.validate(default.get_config())
  assert validation.resolve_preprocessing("binarized_mnist", "auto", "binary") == "binary"
  assert validation.resolve_preprocessing("mnist", "auto", "binary") == "dynamic"
  assert validation.resolve_preprocessing("cifar10", "auto", "continuous") == "dequantize"


def test_beta_config_argument():
  config = beta_config.get_config("beta=4,latent_dim=10")
  assert config.objective.beta == 4.0 and config.model.latent_dim == 10
  with pytest.raises(ValueError, match="unknown name 'betta'.*NAME in: beta \\(float"):
    beta_config.get_config("betta=4")
  with pytest.raises(ValueError, match="'four' is not a valid float"):
    beta_config.get_config("beta=four")
