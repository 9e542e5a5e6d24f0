r"""Evaluates a checkpoint of a run: python -m experiments.evaluate --workdir=DIR.

Test -ELBO, rate, distortion, IWAE NLL (k importance samples), active units and
mutual information of the latest intact checkpoint (or --step=STEP, or
--step=best for runs with keep_best_checkpoint), written to
DIR/eval/step_STEP_kK.json. Read-only for the run itself: works on finished and
running runs alike.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from experiments import cli  # pylint: disable=g-import-not-at-top,wrong-import-position  # first: signals
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from vae_jax.evaluation import saved_run as checkpoint_eval
from vae_jax import parallel
from vae_jax.training import loop as train
from vae_jax.training import preemption

_WORKDIR = flags.DEFINE_string("workdir", None, "A vae_jax run directory.", required=True)
_K = flags.DEFINE_integer("num_importance_samples", None,
                          "IWAE samples k (default: the run's eval.num_importance_samples).")
_STEP = flags.DEFINE_string("step", None, "Checkpoint step, or 'best' (default: the latest).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  parallel.initialize()  # joins a pod slice's job, if any; before any other JAX use
  try:
    step = checkpoint_eval.parse_step(_STEP.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  with preemption.read_only_command("the evaluation"):
    record = checkpoint_eval.evaluate_checkpoint(
        _WORKDIR.value, step=step, num_importance_samples=_K.value)
  logging.info("step %d: %s", record["step"], train.describe(record["test"]))


if __name__ == "__main__":
  cli.run(main, "evaluate")
