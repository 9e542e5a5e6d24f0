"""The compiled train step: the batch it gathers, and what it no longer runs per step."""

import jax
import jax.numpy as jnp
import numpy as np

from tests.conftest import make_config
from vae_jax import models
from vae_jax import parallel
from vae_jax.data import datasets
from vae_jax.training import state as state_lib
from vae_jax.training import step as training


def test_a_batch_is_the_examples_at_its_indices_in_order():
  rng = np.random.default_rng(0)
  data = {"image": rng.integers(0, 256, (50, 4, 3, 2), dtype=np.uint8),
          "label": rng.integers(0, 10, 50, dtype=np.int32)}
  indices = jnp.asarray(rng.permutation(50)[:7])
  batch = training.make_batch({k: jnp.asarray(v) for k, v in data.items()}, indices, None,
                              "binary")
  assert batch["image"].dtype == jnp.float32 and batch["image"].shape == (7, 4, 3, 2)
  np.testing.assert_array_equal(batch["image"], data["image"][np.asarray(indices)])
  np.testing.assert_array_equal(batch["label"], data["label"][np.asarray(indices)])


def _compiled_chunk_text(config, num_steps=5):
  info = datasets.info(config.data.name)
  model = models.build(config, info)
  tx = state_lib.make_optimizer(config.optim, 100)
  num_examples = 4 * config.batch_size
  spec = training.spec_from_config(config, num_examples, "dynamic")
  state = state_lib.create_train_state(0, model, tx)
  data = {"image": np.zeros((num_examples, *info.image_shape), np.uint8)}
  perms = tuple(np.arange(num_examples, dtype=np.int32)
                for _ in range(training.epochs_touched(spec, num_steps)))
  fn = parallel.data_parallel(training.make_train_chunk(model, tx, spec), static_argnums=(4,))
  r = parallel.replicate
  return fn.lower(r(state), {}, r(data), r(perms), num_steps).compile().as_text()


def test_one_device_step_runs_no_loop_but_the_scan_and_no_collective():
  # Dynamic binarization and free bits: every per-example draw (pixels, latents)
  # and the free-bits floor's mean over devices are in the program.
  text = _compiled_chunk_text(make_config(objective__free_bits=0.1))
  assert jax.device_count() == 1
  assert text.count(" while(") == 1  # the scan of steps; the hashes have no loop of their own
  assert "all-reduce" not in text     # the mean over one device is the value itself
