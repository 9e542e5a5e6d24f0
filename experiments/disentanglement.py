r"""Scores a run's representation against ground-truth factors: python -m experiments.disentanglement --workdir=DIR.

The BetaVAE and FactorVAE scores, MIG, DCI, SAP, modularity and explicitness and
the unsupervised scores of the encoder mean at the run's selected checkpoint,
with disentanglement_lib's defaults (--scale multiplies sample counts),
written to DIR/disentanglement.json; nothing else in DIR changes. A run scored
before gains the metrics its file lacks (e.g. --metrics=dci), keeping the rest.
The run must be on data with factors (dsprites, dsprites_procedural, ...). A
sweep's directory (with sweep.json) scores what each finished member lacks, in
one process. See docs/disentanglement.md.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments import cli  # pylint: disable=g-import-not-at-top,wrong-import-position  # first: signals
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from vae_jax.analysis import tables
from vae_jax.evaluation.disentanglement import scoring
from vae_jax.training import preemption
from vae_jax.training import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "A vae_jax run directory.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Each metric's RandomState seed.")
_SCALE = flags.DEFINE_list("scale", None, "Factors on the metrics' sample counts: F (every "
                           "metric) and/or METRIC=F (default 1: disentanglement_lib's).")
_TRAVERSALS = flags.DEFINE_string(
    "traversals", None, "Also draw latent traversals labelled by factor to this PNG (after "
    "scoring, or from an existing disentanglement.json).")
_METRICS = flags.DEFINE_list("metrics", None, f"Metrics to compute (default: all): "
                             f"{', '.join(scoring.METRICS)}.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if os.path.exists(os.path.join(_WORKDIR.value, tables.SWEEP_FILE)):
    _, members = tables.read_sweep(_WORKDIR.value)
    todo = [m.name for m in members if m.status == "done" and scoring.missing_metrics(
        workdir_lib.read_json(os.path.join(_WORKDIR.value, m.name, scoring.OUTPUT_FILE)),
        _METRICS.value)]
    logging.info("Scoring %d finished members of the sweep in %s (the metrics each lacks).",
                 len(todo), _WORKDIR.value)
    for name in todo:
      start = time.time()
      with preemption.read_only_command("the disentanglement scores"):
        scoring.score_run(os.path.join(_WORKDIR.value, name), seed=_SEED.value,
                          scale=_SCALE.value, metrics=_METRICS.value)
      logging.info("%s: %.0f s", name, time.time() - start)
    return
  scores_path = os.path.join(_WORKDIR.value, scoring.OUTPUT_FILE)
  with preemption.read_only_command("the disentanglement scores"):
    if _TRAVERSALS.value and os.path.exists(scores_path):
      record = scoring.read_record(_WORKDIR.value)
    else:
      record = scoring.score_run(_WORKDIR.value, seed=_SEED.value, scale=_SCALE.value,
                                 metrics=_METRICS.value)
    if _TRAVERSALS.value:
      scoring.draw_traversals(_WORKDIR.value, record, _TRAVERSALS.value)
      logging.info("Wrote %s", _TRAVERSALS.value)
  logging.info("step %d: %s", record["step"],
               ", ".join(f"{k} {v:.3f}" for k, v in scoring.headline(record).items()))


if __name__ == "__main__":
  cli.run(main, "disentanglement")
