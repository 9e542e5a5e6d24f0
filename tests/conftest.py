"""Shared helpers: small configs, the shared data folder, quiet TensorFlow, one XLA cache."""

import atexit
import concurrent.futures
import os
import shutil
import sys
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _share_compiled_programs():
  """One JAX persistent compilation cache for this session, its pytest-xdist workers and
  every subprocess they start (the workers inherit the variable from pytest's first process).

  Most of the suite's time is XLA compiling the same small programs again: every
  subprocess run, and every in-process run (each builds new closures), compiles its
  train chunk and evaluation anew. Loaded from a cache, a small training subprocess
  takes 10 s instead of 23 s (a cached executable is the program XLA compiled, so
  results stay bitwise the same). Set before JAX is imported; subprocesses inherit
  it through the environment. A JAX_COMPILATION_CACHE_DIR set by the caller is used
  instead, and kept.
  """
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    path = tempfile.mkdtemp(prefix="vae_jax_tests_xla_cache_")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


_share_compiled_programs()
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


def concurrently(function, *argument_lists, workers=2):
  """``function`` over the arguments, ``workers`` calls at a time (threads).

  For tests that start subprocesses: each spends most of its time starting Python and
  compiling on one core, so two overlap on the 2-core CI machine.
  """
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(function, *argument_lists))


@pytest.fixture(scope="session")
def prepared_binarized_mnist(tmp_path_factory):
  """(data_dir, Dataset): TFDS's binarized_mnist prepared offline from ../shared's .amat
  files, once for the session (each preparation takes a quarter of a minute)."""
  if not os.path.isdir(SHARED_BINARIZED_MNIST):
    pytest.skip("needs ../shared/data/binarized_mnist")
  from vae_jax.data import datasets  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(datasets, "host_reachable", lambda *a, **k: False)  # truly offline
    dataset = datasets.load("binarized_mnist", data_dir=data_dir,
                            manual_dir=SHARED_BINARIZED_MNIST)
  return data_dir, dataset


def set_fields(config, overrides):
  """Applies {"a.b": value} overrides, as --config.a.b=value would; returns the config."""
  config.update_from_flattened_dict(overrides)
  return config


def make_config(**overrides):
  """A small, fast config on embedded data; keyword 'a__b' sets field 'a.b'."""
  fields = dict(SMALL)
  fields.update({k.replace("__", "."): v for k, v in overrides.items()})
  return set_fields(default.get_config(), fields)


def saved_state(workdir, config, image_shape=(8, 8, 1), step=None):
  """(the state a run saved at ``step`` or its latest, the run's initial state)."""
  from vae_jax import models  # pylint: disable=g-import-not-at-top
  from vae_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from vae_jax.training import checkpoints  # pylint: disable=g-import-not-at-top
  from vae_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  info = datasets.info(config.data.name)
  model = models.build(config, datasets.DataInfo(info.name, tuple(image_shape), info.binary,
                                                 info.num_classes))
  from vae_jax.objectives import auxiliary  # pylint: disable=g-import-not-at-top
  init = state_lib.create_train_state(config.seed, model,
                                      state_lib.make_optimizer(config.optim, 1),
                                      auxiliary.get(config))
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
