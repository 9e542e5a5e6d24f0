r"""Trains one VAE: python -m experiments.train --config=configs/beta.py --workdir=DIR.

Any config field can be overridden, e.g. --config.model.latent_dim=10, and a
config argument selects a variant: --config=configs/beta.py:beta=4. Rerunning
the same command on the same workdir resumes it; SIGTERM and Ctrl-C save and exit.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from experiments import cli  # pylint: disable=g-import-not-at-top,wrong-import-position  # first: signals
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags

from vae_jax import parallel
from vae_jax.training import loop as train
from vae_jax import validation

_DEFAULT_CONFIG = "configs/default.py"
_CONFIG = validation.define_config_flag(_DEFAULT_CONFIG, "Config file (optionally FILE:ARG).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, "
                               "images and results.json.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "If the workdir holds another or a "
                               "finished run, move it to WORKDIR.replaced-TIME and start anew.")
_ALLOW = flags.DEFINE_list("allow_config_changes", [], "Continue the run in the workdir "
                           "with these fields changed, e.g. num_epochs,eval.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  parallel.initialize()  # joins a pod slice's job, if any; before any other JAX use
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value,
                           allow_changes=_ALLOW.value)


if __name__ == "__main__":
  cli.run(main, "train")
