"""The on-device pipeline: epochs cover the data, slices tile the global batch."""

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax.data import pipeline


def test_an_epoch_visits_every_example_once_and_epochs_differ():
  rng = jax.random.PRNGKey(0)
  p0 = np.asarray(pipeline.epoch_permutation(rng, jnp.int32(0), 1000))
  p1 = np.asarray(pipeline.epoch_permutation(rng, jnp.int32(1), 1000))
  assert sorted(p0) == list(range(1000)) and not np.array_equal(p0, p1)


def test_device_slices_tile_the_global_batch():
  perms = jnp.stack([pipeline.epoch_permutation(jax.random.PRNGKey(0), jnp.int32(e), 100)
                     for e in range(2)])
  whole, positions = pipeline.local_batch_indices(perms, 1, 3, 16, 16, 0)
  parts = [pipeline.local_batch_indices(perms, 1, 3, 16, 4, d) for d in range(4)]
  np.testing.assert_array_equal(whole, np.concatenate([p[0] for p in parts]))
  np.testing.assert_array_equal(positions, np.concatenate([p[1] for p in parts]))
  np.testing.assert_array_equal(whole, perms[1, 48:64])


def test_dynamic_binarization_is_bernoulli_of_the_intensity_and_redrawn():
  images = jnp.full((4000, 1, 1, 1), 64, jnp.uint8)  # p = 64 / 255
  keys_a = pipeline.example_keys(jax.random.PRNGKey(0), jnp.arange(4000))
  keys_b = pipeline.example_keys(jax.random.PRNGKey(1), jnp.arange(4000))
  a = pipeline.preprocess(images, keys_a, "dynamic")
  b = pipeline.preprocess(images, keys_b, "dynamic")
  assert set(np.unique(a)) <= {0.0, 1.0}
  assert abs(float(a.mean()) - 64 / 255) < 4 * np.sqrt(0.25 / 4000)
  assert not np.array_equal(a, b)


def test_dequantization_stays_inside_each_pixels_bin():
  images = jnp.array([0, 100, 255], jnp.uint8).reshape(3, 1, 1, 1)
  keys = pipeline.example_keys(jax.random.PRNGKey(0), jnp.arange(3))
  x = np.asarray(pipeline.preprocess(images, keys, "dequantize")).ravel()
  lower = np.array([0, 100, 255]) / 256
  assert np.all(x >= lower) and np.all(x < lower + 1 / 256)
