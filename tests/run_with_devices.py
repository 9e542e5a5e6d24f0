"""Runs train_and_evaluate on N fake CPU devices: python tests/run_with_devices.py N WORKDIR JSON.

XLA_FLAGS must be set before JAX starts, so multi-device tests run this file in
a subprocess. JSON holds config overrides as {"a.b": value}.
"""

import json
import os
import sys


def main():
  num_devices, workdir, overrides = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  from tests import conftest  # pylint: disable=g-import-not-at-top
  from vae_jax import train  # pylint: disable=g-import-not-at-top
  assert jax.local_device_count() == num_devices, jax.devices()
  config = conftest.set_fields(default.get_config(), overrides)
  train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  main()
