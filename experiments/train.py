r"""Trains one VAE: python -m experiments.train --config=configs/beta.py --workdir=DIR.

Any config field can be overridden, e.g. --config.model.latent_dim=10, and a
config argument selects a variant: --config=configs/beta.py:beta=4.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from ml_collections import config_flags

from vae_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", "configs/default.py",
                                          "Config file (optionally FILE:ARG).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, "
                               "images and results.json.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
