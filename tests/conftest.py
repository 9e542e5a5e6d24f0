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
  from vae_jax import sweeps  # pylint: disable=g-import-not-at-top
  sweeps.apply(config, overrides)
  return config


def make_config(**overrides):
  """A small, fast config on embedded data; keyword 'a__b' sets field 'a.b'."""
  fields = dict(SMALL)
  fields.update({k.replace("__", "."): v for k, v in overrides.items()})
  return set_fields(default.get_config(), fields)


def saved_state(workdir, config, image_shape=(8, 8, 1), step=None):
  """(the state a run saved at ``step`` or its latest, the run's initial state)."""
  from vae_jax import checkpoints, models, training  # pylint: disable=g-import-not-at-top
  model = models.build_model(config.model, image_shape)
  init = training.create_train_state(config.seed, model,
                                     training.make_optimizer(config.optim, 1))
  ckpt = checkpoints.Checkpointer(str(workdir), 3, read_only=True)
  state, _ = ckpt.restore_latest(init) if step is None else ckpt.restore(step, init)
  return state, init


def assert_trees_equal(a, b):
  """Bitwise equality of two pytrees (same structure, same bytes)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture
def config_factory():
  return make_config
