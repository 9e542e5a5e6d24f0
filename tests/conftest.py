"""Shared helpers: small configs, the shared data folder, quiet TensorFlow."""

import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED_BINARIZED_MNIST = os.path.join(os.path.dirname(REPO), "shared", "data",
                                      "binarized_mnist")

from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position

SMALL = {"data.name": "digits", "batch_size": 64, "num_train_steps": 20,
         "steps_per_dispatch": 10, "log_every": 10, "eval_every": 10,
         "checkpoint_every": 10, "eval.batch_size": 100, "model.width": 64,
         "images.num_reconstructions": 16, "images.num_samples": 16,
         "eval.num_importance_samples": 20, "eval.num_importance_samples_during_training": 5}


def set_fields(config, overrides):
  """Applies {"a.b": value} overrides, as --config.a.b=value would."""
  for field, value in overrides.items():
    node = config
    *parents, leaf = field.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def make_config(**overrides):
  """A small, fast config on embedded data; keyword 'a__b' sets field 'a.b'."""
  fields = dict(SMALL)
  fields.update({k.replace("__", "."): v for k, v in overrides.items()})
  return set_fields(default.get_config(), fields)


@pytest.fixture
def config_factory():
  return make_config
