r"""The code-prior study: python -m studies.code_prior --config=FILE --workdir=DIR.

An autoregressive prior over a trained discrete-code model's code grid, fitted
after the autoencoder; see studies/code_prior/config.py.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from studies.code_prior import study
from vae_jax import validation
from vae_jax.training import loop as train

_CONFIG = validation.define_config_flag("studies/code_prior/config.py", "Study config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The study's output directory.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    record = study.run_study(_CONFIG.value, _WORKDIR.value)
  except train.USER_ERRORS as e:
    sys.exit(f"FATAL {type(e).__name__}: {e}")
  logging.info("\n%s", study.markdown(record))
  logging.info("Wrote %s in %.0f s.", ", ".join(study.OUTPUTS), record["wall_time_s"])


if __name__ == "__main__":
  app.run(main)
