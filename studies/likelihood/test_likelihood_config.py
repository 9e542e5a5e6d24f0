"""studies/likelihood/config.py: its config argument, its sweep, every member valid."""

import pytest

from studies.likelihood import config as likelihood
from vae_jax.analysis import sweeps
from vae_jax import validation

SPEC = "studies/likelihood/config.py"


@pytest.mark.parametrize("data, steps", [("mnist_5k", 4000), ("fashion_mnist", 9360)])
def test_every_member_is_a_valid_run_of_the_chosen_data(data, steps):
  config = validation.load_config_file(f"{SPEC}:data={data}")
  assert config.data.name == data and config.num_train_steps == steps
  assert config.data.fallback == ""  # a study never trains on other data in silence
  members = sweeps.load_members(f"{SPEC}:data={data}", config)
  assert len(members) == 4 * len(likelihood.SEEDS)
  settings = {(m.overrides["model.likelihood"], m.overrides.get("model.gaussian_scale"))
              for m in members}
  assert settings == {("bernoulli", None), ("gaussian_fixed", 0.1), ("gaussian_fixed", 1.0),
                      ("gaussian_learned", None)}
  for member in members:
    run = validation.load_config_file(f"{SPEC}:data={data}")
    run.update_from_flattened_dict(member.overrides)
    validation.validate(run)
    pixels = validation.preprocessing_of(run)
    assert pixels == ("dynamic" if run.model.likelihood == "bernoulli" else "dequantize")


@pytest.mark.parametrize("arg, problem", [("data=cifar10", "'cifar10' is not one of its values"),
                                          ("beta=4", "unknown name 'beta'"),
                                          ("data", "it is not NAME=VALUE")])
def test_bad_config_arguments_name_the_valid_ones(arg, problem):
  with pytest.raises(ValueError) as err:
    likelihood.get_config(arg)
  assert str(err.value) == (
      f"Bad config argument {arg!r} in '{SPEC}:{arg}': {problem}. Expected comma-separated "
      f"NAME=VALUE with NAME in: data (one of 'fashion_mnist', 'mnist', 'mnist_5k'; default "
      f"'mnist_5k').")
