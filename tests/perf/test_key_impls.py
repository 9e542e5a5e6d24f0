"""JAX's key implementations: which keep the device-count invariance, and the benchmark's option."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import REPO
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


TRAIN = """
import os, sys
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={sys.argv[1]}"
import jax, numpy as np
from configs import default
from vae_jax.perf import key_impls
assert jax.device_count() == int(sys.argv[1])
config = default.get_config()
config.data.name, config.data.preprocessing, config.model.width = "digits", "dynamic", 16
np.save(sys.argv[3], key_impls.train_params(config, 16, 10, sys.argv[2]))
"""


@pytest.mark.slow
def test_threefry_trains_the_same_on_one_and_two_devices_and_rbg_does_not(tmp_path):
  params = {}
  for impl in ("threefry2x32", "rbg"):
    for n in (1, 2):
      out = tmp_path / f"{impl}-{n}.npy"
      proc = subprocess.run([sys.executable, "-c", TRAIN, str(n), impl, str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
      assert proc.returncode == 0, proc.stderr[-3000:]
      params[impl, n] = np.load(out)
  # Float summation order only (as in tests/test_parallel.py) against other noise.
  assert np.max(np.abs(params["threefry2x32", 1] - params["threefry2x32", 2])) < 1e-5
  assert np.max(np.abs(params["rbg", 1] - params["rbg", 2])) > 1e-3
