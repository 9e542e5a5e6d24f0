r"""The gradient-estimator study: python -m studies.gradients --config=FILE --workdir=DIR.

Pathwise vs score-function estimates of a trained run's encoder gradient, their
agreement, variances, and a test that z = mu + sigma * eps is N(mu, sigma^2).
Writes DIR/gradients.{json,md} and DIR/gradient_variance.png (never over
existing ones); the run itself is read-only. See studies/gradients/config.py.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from studies.gradients import study as gradient_study
from vae_jax.training import loop as train
from vae_jax import validation

_DEFAULT_CONFIG = "studies/gradients/config.py"
_CONFIG = validation.define_config_flag(_DEFAULT_CONFIG, "Study config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The study's output directory.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    record = gradient_study.run_study(_CONFIG.value, _WORKDIR.value)
  except train.USER_ERRORS as e:
    sys.exit(f"FATAL {type(e).__name__}: {e}")
  for row in record["rows"]:
    logging.info("%-9s S=%-5d total variance %.4g (x%s pathwise)", row["estimator"],
                 row["num_samples"], row["total_variance"],
                 f"{row.get('variance_ratio_to_pathwise', 1.0):.4g}")
  logging.info("Wrote %s in %.0f s.", ", ".join(gradient_study.OUTPUTS), record["wall_time_s"])


if __name__ == "__main__":
  app.run(main)
