"""configs/common.py's argument parser, and every config file loaded as --config loads it."""

import glob
import importlib.util
import inspect
import os

import pytest
import ml_collections
from ml_collections.config_flags import config_flags

from configs import common
from tests.conftest import REPO

FILE = os.path.join(REPO, "configs", "example.py")  # messages show it as configs/example.py
SPEC = dict(beta=1.0, latent_dim=20, name="default", flag=False,
            data=common.OneOf("mnist_5k", ("mnist_5k", "mnist", "fashion_mnist")))

# Every config file that takes an argument: accepted arguments -> the fields they set.
# A new file with an argument must be added here (checked below).
ARGUMENTS = {
    "configs/dsprites.py": {
        "": {"objective.beta": 1.0, "seed": 0, "num_train_steps": 300,
             "optim.learning_rate": 1e-3, "data.name": "dsprites_procedural"},
        "beta=16,seed=1": {"objective.beta": 16.0, "seed": 1, "num_train_steps": 300},
        "protocol=paper": {"num_train_steps": 300_000, "optim.learning_rate": 1e-4}},
    "configs/dsprites_study.py": {
        "": {"objective.regularizer": "beta_vae", "objective.beta": 1.0, "seed": 0,
             "num_train_steps": 300, "objective.iteration_threshold": 100},
        "model=annealed_vae,seed=1": {"objective.regularizer": "annealed_vae",
                                      "objective.c_max": 5.0, "objective.gamma": 1000.0,
                                      "seed": 1},
        "model=dip_vae_ii,protocol=paper": {"objective.regularizer": "dip_vae_ii",
                                            "objective.lambda_d_factor": 1.0,
                                            "objective.iteration_threshold": 100_000,
                                            "num_train_steps": 300_000}},
    "configs/beta.py": {
        "": {"objective.beta": 1.0, "model.latent_dim": 20, "seed": 0},
        "beta=4": {"objective.beta": 4.0, "model.latent_dim": 20},
        "beta=0.5,latent_dim=10": {"objective.beta": 0.5, "model.latent_dim": 10},
        "seed=2,beta=0.1": {"seed": 2, "objective.beta": 0.1}},
    "configs/latent_dim.py": {
        "": {"objective.beta": 1.0, "model.latent_dim": 20},
        "latent_dim=50": {"model.latent_dim": 50, "objective.beta": 1.0},
        "latent_dim=5,seed=1": {"model.latent_dim": 5, "seed": 1}},
    "configs/cvae.py": {
        "": {"data.name": "mnist_5k", "model.prior": "standard", "num_epochs": 150},
        "prior=learned": {"model.prior": "learned", "model.likelihood": "bernoulli"},
        "data=cifar10": {"data.name": "cifar10", "model.likelihood": "gaussian_fixed"},
        "data=fashion_mnist,num_epochs=10": {"data.name": "fashion_mnist", "num_epochs": 10}},
    "configs/gumbel.py": {
        "": {"model.num_latents": 30, "model.categories": 10, "model.straight_through": False},
        "straight_through=true": {"model.straight_through": True},
        "num_latents=20,categories=2": {"model.num_latents": 20, "model.categories": 2}},
    "studies/likelihood/config.py": {
        "": {"data.name": "mnist_5k", "num_train_steps": 4000, "data.fallback": ""},
        "data=mnist_5k": {"data.name": "mnist_5k", "num_train_steps": 4000},
        "data=fashion_mnist": {"data.name": "fashion_mnist", "num_train_steps": 9360},
        "data=mnist": {"data.name": "mnist", "num_train_steps": 9360}},
    "studies/amortization/config.py": {
        "": {"data.name": "binarized_mnist", "model.width": 500, "study.num_test": 1000},
        "data=binarized_mnist": {"data.name": "binarized_mnist", "data.fallback": ""},
        "data=squares": {"data.name": "squares", "model.width": 64, "num_train_steps": 5000,
                         "study.num_test": 200, "study.batch_size": 200}},
    "configs/vqvae.py": {
        "": {"model.name": "vqvae", "data.name": "fashion_mnist", "model.num_codes": 64,
             "model.ema": True, "model.restart_dead_codes": True},
        "size=full,data=cifar10": {"model.num_codes": 512, "model.code_dim": 64,
                                   "data.name": "cifar10", "num_train_steps": 250_000},
        "ema=false,restart=false,seed=3": {"model.ema": False, "model.restart_dead_codes": False,
                                          "seed": 3}},
    "configs/iwae.py": {
        "": {"model.name": "gaussian_vae", "objective.name": "iwae", "objective.num_samples": 1,
             "num_epochs": 7, "eval.num_importance_samples": 5000, "optim.schedule": "iwae_3i",
             "data.test_split": "test[:2000]", "model.init": "lecun_normal"},
        "epochs=13,test_images=0": {"num_epochs": 13, "data.test_split": "test"},
        "layers=2,objective=vae,k=50": {"model.name": "two_layer_vae", "model.latent_dim": 100,
                                        "objective.name": "k_sample_elbo",
                                        "objective.num_samples": 50},
        "protocol=full,estimator=dreg": {"num_epochs": 3280, "eval.num_importance_samples": 5000,
                                         "objective.gradient_estimator": "dreg",
                                         "optim.schedule": "iwae_3i", "data.test_split": "test"},
        "data=dynamic": {"data.name": "mnist", "data.preprocessing": "dynamic"}},
}


def _config_files() -> list[str]:
  """Every file ml_collections can load as --config: configs/*.py and studies/*/config.py."""
  paths = glob.glob(os.path.join(REPO, "configs", "*.py"))
  paths += glob.glob(os.path.join(REPO, "studies", "*", "config.py"))
  files = [os.path.relpath(p, REPO) for p in sorted(paths)]
  return [f for f in files if os.path.basename(f) not in ("__init__.py", "common.py")]


def _load(spec: str):
  return config_flags.ConfigFileFlagParser("config", lock_config=False).parse(spec)


def _takes_argument(file: str) -> bool:
  spec = importlib.util.spec_from_file_location("probe_config", os.path.join(REPO, file))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return bool(inspect.signature(module.get_config).parameters)


def test_values_are_cast_to_the_type_of_their_default():
  args = common.parse_arg("beta=4,latent_dim=10,name=x,flag=true,data=mnist", file=FILE, **SPEC)
  assert args.to_dict() == {"beta": 4.0, "latent_dim": 10, "name": "x", "flag": True,
                            "data": "mnist"}
  assert type(args.beta) is float and type(args.latent_dim) is int
  assert type(args.flag) is bool


@pytest.mark.parametrize("arg", [None, "", ",", " "])
def test_no_argument_gives_the_defaults(arg):
  args = common.parse_arg(arg, file=FILE, **SPEC)
  assert args.to_dict() == {"beta": 1.0, "latent_dim": 20, "name": "default", "flag": False,
                            "data": "mnist_5k"}
  assert type(args.beta) is float


def test_empty_items_and_spaces_around_names_and_values_are_ignored():
  args = common.parse_arg("beta = 0.5,, latent_dim=3,", file=FILE, **SPEC)
  assert (args.beta, args.latent_dim) == (0.5, 3)


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("FALSE", False),
                                         ("false", False)])
def test_bools_are_true_or_false_in_any_case(text, value):
  assert common.parse_arg(f"flag={text}", file=FILE, **SPEC).flag is value


@pytest.mark.parametrize("item, problem", [
    ("betta=4", "unknown name 'betta'"),
    ("beta", "it is not NAME=VALUE"),
    ("=4", "unknown name ''"),
    ("beta=four", "'four' is not a valid float"),
    ("latent_dim=1.5", "'1.5' is not a valid int"),
    ("flag=yes", "'yes' is not a valid bool (true or false)"),
    ("flag=1", "'1' is not a valid bool (true or false)"),
    ("data=cifar10", "'cifar10' is not one of its values"),
])
def test_a_bad_item_is_refused_in_one_line_naming_file_item_and_valid_names(item, problem):
  arg = f"name=ok,{item}"  # the bad item after a good one
  with pytest.raises(common.ConfigArgumentError) as err:
    common.parse_arg(arg, file=FILE, **SPEC)
  message = str(err.value)
  assert "\n" not in message
  assert message.startswith(f"Bad config argument {item!r} in 'configs/example.py:{arg}': "
                            f"{problem}. ")
  assert message.endswith(
      "NAME in: beta (float, default 1.0), latent_dim (int, default 20), name (str, default "
      "'default'), flag (bool, default False), data (one of 'fashion_mnist', 'mnist', "
      "'mnist_5k'; default 'mnist_5k').")
  assert isinstance(err.value, ValueError)  # what ml_collections' flag reports, with the file


def test_a_name_given_twice_is_refused_not_silently_overridden():
  with pytest.raises(common.ConfigArgumentError, match="beta is given twice"):
    common.parse_arg("beta=1,beta=2", file=FILE, **SPEC)


def test_the_result_is_locked_so_a_misspelt_name_fails():
  args = common.parse_arg("", file=FILE, beta=1.0)
  with pytest.raises(AttributeError, match="Did you mean \"beta\""):
    _ = args.betta
  with pytest.raises(AttributeError, match="config is locked"):
    args.betta = 2.0


def test_declarations_are_checked():
  with pytest.raises(TypeError, match="among its choices"):
    common.OneOf("cifar10", ("mnist",))
  with pytest.raises(TypeError, match="a default must be"):
    common.parse_arg("", file=FILE, sizes=(1, 2))
  assert common.describe({}) == "none (this file takes no argument)"


def test_files_are_named_relative_to_the_repository():
  assert common.display_path(os.path.join(REPO, "studies", "likelihood", "config.py")) == (
      "studies/likelihood/config.py")
  assert common.display_path("/elsewhere/my_config.py") == "/elsewhere/my_config.py"


def test_the_table_below_lists_every_config_file_that_takes_an_argument():
  files = _config_files()
  assert {"configs/default.py", "configs/beta.py", "studies/likelihood/config.py"} <= set(files)
  assert {f for f in files if _takes_argument(f)} == set(ARGUMENTS)


@pytest.mark.parametrize("file", _config_files())
def test_every_config_file_loads_as_the_flag_loads_it(file):
  config = _load(file)
  assert isinstance(config, ml_collections.ConfigDict) and config
  if file not in ARGUMENTS:
    return
  for arg, fields in ARGUMENTS[file].items():
    loaded = _load(f"{file}:{arg}")
    for field, value in fields.items():
      assert loaded[field] == value and type(loaded[field]) is type(value), (arg, field)
  assert _load(file) == _load(f"{file}:")  # no argument and an empty one: the defaults
  with pytest.raises(common.ConfigArgumentError) as err:
    _load(f"{file}:nonsense=1")
  assert f"Bad config argument 'nonsense=1' in '{file}:nonsense=1': unknown name" in str(err.value)
