r"""Runs a sweep: python -m experiments.sweep --config=configs/beta.py --workdir=DIR.

Every member of the config file's sweep() trains in DIR/<its overrides>, N at a
time (--parallel=N); members with results are skipped, so rerunning after a
crash or preemption does only what is missing. --member=K runs member K alone,
in this process (TPU workers, array jobs); --dry_run lists the members.
--config.FIELD=VALUE overrides apply to every member.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF only reads data here.

from experiments import cli  # pylint: disable=g-import-not-at-top,wrong-import-position  # first: signals
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging
import ml_collections
from ml_collections import config_flags

from vae_jax import parallel
from vae_jax.analysis import sweeps
from vae_jax.training import preemption
from vae_jax import validation

_CONFIG = validation.define_config_flag(None, "Sweep config file (with sweep()).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory.", required=True)
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Members running at once.", lower_bound=1)
_MEMBER = flags.DEFINE_integer("member", None, "Run only member K, in this process.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the members and their status; run nothing.")
flags.mark_flag_as_required("config")


def _train(config: ml_collections.ConfigDict, workdir: str) -> None:
  """--member=K's run, in this process.

  vae_jax.training.loop is imported here, not above: it brings in TensorFlow (4.5 s), which
  the driver, launching members as subprocesses, and --dry_run never need.
  """
  from vae_jax.training import loop as train  # pylint: disable=g-import-not-at-top
  train.train_and_evaluate(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  parallel.initialize()
  spec = config_flags.get_config_filename(flags.FLAGS["config"])
  extra = [a for a in sys.argv[1:] if a.startswith("--config.")]
  workdir = os.path.abspath(_WORKDIR.value)
  members = sweeps.load_members(spec, _CONFIG.value)
  if _MEMBER.value is not None:  # on a pod: every host runs this, process 0 writes
    member = sweeps.member_by_index(members, _MEMBER.value)
    sweeps.check_members(_CONFIG.value, [member], extra)
    if jax.process_index() == 0:
      sweeps.record(workdir, spec, extra, members)
    done = sweeps.status(workdir, member) == "done"
    if parallel.process_zero_agrees(done):
      logging.info("Member %d (%s) is done; skipping.", member.index, member.name)
      return
    config = _CONFIG.value
    config.update_from_flattened_dict(member.overrides)
    directory = os.path.join(workdir, member.name)
    try:
      _train(config, directory)
    except Exception as e:  # failed as the driver would record it (a stop is no failure)
      if not isinstance(e, preemption.Stopped) and jax.process_index() == 0:
        sweeps.record_member_error(directory, os.path.join(workdir, "sweep.log"), e)
      raise
    return
  # Every member's config as its own run would validate it, before anything is made.
  sweeps.check_members(_CONFIG.value, members, extra)
  if _DRY_RUN.value:
    print(sweeps.describe(workdir, members, spec, extra))
    return
  sweeps.record(workdir, spec, extra, members)
  start = time.time()
  outcome = sweeps.run_all(spec, workdir, members, extra, _PARALLEL.value)
  print(sweeps.summary_line(outcome, time.time() - start))
  for name in outcome["stopped"]:
    print(f"  stopped: {name} (saved; rerun the same command to resume it)")
  for name in outcome["failed"]:
    print(f"  failed: {name} (see {os.path.join(workdir, name, sweeps.LOG_FILE)})")
  if outcome["failed"]:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main, "sweep")
