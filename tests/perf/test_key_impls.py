"""JAX's key implementations: which keep the device-count invariance, and the benchmark's option."""


import jax
import numpy as np
import pytest

from vae_jax import validation
from vae_jax.perf import key_impls

# A global batch of 16 on two devices: device 1 draws examples 8..15 as a batch of its own.
WHOLE, SECOND_HALF = np.arange(16), np.arange(8, 16)


def test_an_unknown_key_implementation_is_named_with_the_valid_ones():
  with pytest.raises(validation.ConfigError) as e:
    key_impls.check_key_impls(["rbg", "threefry"], "--key_impls")
  message = str(e.value)
  assert "\n" not in message and message.startswith("--key_impls=rbg,threefry")
  assert "unknown key implementation threefry" in message
  assert all(name in message for name in key_impls.KEY_IMPLS)


def test_threefry_is_always_measured_first_and_once():
  assert key_impls.check_key_impls(["rbg", "threefry2x32", "rbg"], "f") == ["threefry2x32", "rbg"]
  assert key_impls.check_key_impls(["unsafe_rbg"], "f") == ["threefry2x32", "unsafe_rbg"]


def test_the_implementation_is_restored_after_its_block_even_on_error():
  before = jax.config.jax_default_prng_impl
  with pytest.raises(RuntimeError, match="inside"):
    with key_impls.key_impl("rbg"):
      assert jax.config.jax_default_prng_impl == "rbg"
      raise RuntimeError("inside")
  assert jax.config.jax_default_prng_impl == before


def test_threefry_keys_draw_each_example_s_noise_whatever_batch_it_is_in():
  whole = key_impls.example_draws("threefry2x32", WHOLE)
  assert np.array_equal(whole[8:], key_impls.example_draws("threefry2x32", SECOND_HALF))
  assert len(np.unique(whole[:, 0])) == len(WHOLE)  # each example its own noise


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_rbg_draws_a_vmapped_batch_from_its_first_key_so_the_split_changes_the_noise(impl):
  # JAX batches RngBitGenerator by drawing the whole batch's shape from the first
  # key (jax-ml/jax#19085): an example's noise depends on who comes first in its batch.
  whole = key_impls.example_draws(impl, WHOLE)
  assert not np.array_equal(whole[8:], key_impls.example_draws(impl, SECOND_HALF))
  assert np.array_equal(whole[:8], key_impls.example_draws(impl, WHOLE[:8]))
