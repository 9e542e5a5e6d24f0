r"""The amortization study: python -m studies.amortization --config=FILE[:ARG] --workdir=DIR.

Trains (or reuses) a VAE with a global q(z) and one with an amortized encoder
q(z|x) in DIR/global and DIR/amortized, refines the encoder's q per test point
by SVI, and writes DIR/amortization.{json,md} and PNGs (never over existing
ones). See studies/amortization/config.py for the commands.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from studies.amortization import study as amortization
from vae_jax.training import preemption
from vae_jax.training import loop as train
from vae_jax import validation

_DEFAULT_CONFIG = "studies/amortization/config.py"
_CONFIG = validation.define_config_flag(_DEFAULT_CONFIG, "Study config file (optionally FILE:ARG).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The study's directory.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    record = amortization.run_study(_CONFIG.value, _WORKDIR.value)
  except preemption.Preempted as e:  # a run saved and stopped; the same command resumes it
    logging.warning("%s", e)
    return
  except train.USER_ERRORS as e:
    sys.exit(f"FATAL {type(e).__name__}: {e}")
  gaps = record["gaps"]
  logging.info("amortization gap %.3f ± %.3f, approximation gap %.3f ± %.3f nats (%.0f s)",
               gaps["amortization"]["mean"], gaps["amortization"]["se"],
               gaps["approximation"]["mean"], gaps["approximation"]["se"],
               record["seconds"]["total"])


if __name__ == "__main__":
  app.run(main)
