r"""Trains one VAE: python -m experiments.train --config=configs/beta.py [--workdir=DIR].

Any config field can be overridden, e.g. --config.model.latent_dim=10, and a
config argument selects a variant: --config=configs/beta.py:beta=4. Rerunning
the same command on the same workdir resumes it; SIGTERM and Ctrl-C save and exit.
Without --workdir, the run gets a new folder, workdirs/CONFIG-TIMESTAMP, and
logs its name: pass it as --workdir to resume or continue that run.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from experiments import cli  # pylint: disable=g-import-not-at-top,wrong-import-position  # first: signals
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from vae_jax import parallel
from vae_jax.training import loop as train
from vae_jax.training import preemption
from vae_jax.training import workdir as workdir_lib
from vae_jax import validation

_DEFAULT_CONFIG = "configs/default.py"
_CONFIG = validation.define_config_flag(_DEFAULT_CONFIG, "Config file (optionally FILE:ARG).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, "
                               "images and results.json. Default: a new folder, "
                               "workdirs/CONFIG-TIMESTAMP (logged; pass it to resume).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "If the workdir holds another or a "
                               "finished run, move it to WORKDIR.replaced-TIME and start anew.")
_ALLOW = flags.DEFINE_list("allow_config_changes", [], "Continue the run in the workdir "
                           "with these fields changed, e.g. num_epochs,eval.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  parallel.initialize()  # joins a pod slice's job, if any; before any other JAX use
  workdir, log_file = _WORKDIR.value, None
  if workdir is None:
    validation.validate(_CONFIG.value)  # a config that will be refused makes no folder
    workdir = workdir_lib.new_default(config_flags.get_config_filename(flags.FLAGS["config"]),
                                      num_processes=jax.process_count())
    log_file = cli.log_to_file(workdir, "train")
  try:
    train.train_and_evaluate(_CONFIG.value, workdir, overwrite=_OVERWRITE.value,
                             allow_changes=_ALLOW.value)
  except preemption.Stopped:
    if _WORKDIR.value is None:  # "the same command" would start anew
      logging.warning("This run's workdir is %s: resume it with --workdir=%s.", workdir, workdir)
    raise
  except Exception:
    moved = log_file and workdir_lib.remove_if_unused(workdir, "train.log")
    if moved:  # refused before anything was made: no folder left behind
      log_file.path = moved
      logging.warning("Refused before anything was made: %s is removed again; its log is %s.",
                      workdir, moved)
    raise


if __name__ == "__main__":
  cli.run(main, "train")
