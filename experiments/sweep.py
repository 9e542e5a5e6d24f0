r"""Runs a sweep: python -m experiments.sweep --config=configs/beta.py --workdir=DIR.

Every member of the config file's sweep() trains in DIR/<its overrides>. Members
that differ only in values (seed, beta, learning rate, free bits, warm-up, latent
dimension) train together as populations of at most --population_size, one compiled
program each, N processes at a time (--parallel=N); --population_size=1 trains one
member per process. Members with results are skipped, so rerunning after a crash or
preemption does only what is missing. --member=K runs member K alone and --members=K,L
those members as one population, in this process (array jobs); --in_process runs the
whole sweep in this process (every worker of a TPU slice); --dry_run lists the
members and populations. --config.FIELD=VALUE overrides apply to every member.
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
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Processes (populations) running at once.",
                                 lower_bound=1)
_POPULATION_SIZE = flags.DEFINE_integer(
    "population_size", 0, "Most members trained together in one program (memory grows "
    "with it); 1: one member per process; 0: 4 on a CPU, 64 on GPUs and TPUs "
    "(docs/performance.md#populations).", lower_bound=0)
_SPLIT = flags.DEFINE_enum(
    "population_split", "auto", ["auto", "batch", "members"], "How a population shares "
    "the devices: each device a slice of every member's batch, or whole members; auto: "
    "members where they divide evenly over the devices.")
_MEMBER = flags.DEFINE_integer("member", None, "Run only member K, in this process.")
_MEMBERS = flags.DEFINE_list("members", None, "Run these members (indices) as one "
                             "population, in this process.")
_IN_PROCESS = flags.DEFINE_bool("in_process", False, "Run every population in this process, "
                                "one after another (each worker of a TPU slice runs this).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the members and their status; run nothing.")
flags.mark_flag_as_required("config")


def _train(config: ml_collections.ConfigDict, workdir: str, unit: list[sweeps.Member]) -> bool:
  """Trains ``unit`` (one member, or a population) in this process; returns whether every
  member finished. A member that fails alone (non-finite) gets its failure.json.

  vae_jax.training.loop is imported here, not above: it brings in TensorFlow (4.5 s), which
  the driver, launching members as subprocesses, and --dry_run never need.
  """
  from vae_jax.training import loop as train  # pylint: disable=g-import-not-at-top
  done = [m for m in unit if sweeps.status(workdir, m) == "done"]
  if parallel.process_zero_agrees(len(done) == len(unit)):
    logging.info("Members %s are done; skipping.", ", ".join(m.name for m in unit))
    return True
  unit = [m for m in unit if m not in done]
  directories = [os.path.join(workdir, m.name) for m in unit]
  if len(unit) == 1:
    train.train_and_evaluate(sweeps.member_config(config, unit[0]), directories[0])
    return True
  outcomes = train.train_population([sweeps.member_config(config, m) for m in unit],
                                    directories, split=_SPLIT.value)
  failed = [(d, o) for d, o in zip(directories, outcomes) if isinstance(o, Exception)]
  for directory, error in failed:
    if jax.process_index() == 0:
      sweeps.record_failure(directory, 1, os.path.join(directory, sweeps.LOG_FILE), str(error))
  return not failed


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  parallel.initialize()
  spec = config_flags.get_config_filename(flags.FLAGS["config"])
  extra = [a for a in sys.argv[1:] if a.startswith("--config.")]
  workdir = os.path.abspath(_WORKDIR.value)
  members = sweeps.load_members(spec, _CONFIG.value)
  if _MEMBER.value is not None or _MEMBERS.value:  # on a pod: every host runs this
    chosen = [str(_MEMBER.value)] if _MEMBER.value is not None else _MEMBERS.value
    unit = [sweeps.member_by_index(members, k) for k in chosen]
    sweeps.check_members(_CONFIG.value, unit, extra)
    if jax.process_index() == 0:
      sweeps.record(workdir, spec, extra, members)
    try:
      finished = _train(_CONFIG.value, workdir, unit)
    except Exception as e:  # failed as the driver would record it (a stop is no failure)
      if not isinstance(e, preemption.Stopped) and jax.process_index() == 0:
        for member in unit:
          if sweeps.status(workdir, member) != "done":
            sweeps.record_member_error(os.path.join(workdir, member.name),
                                       os.path.join(workdir, "sweep.log"), e)
      raise
    if not finished:
      sys.exit(1)
    return
  # Every member's config as its own run would validate it, before anything is made.
  sweeps.check_members(_CONFIG.value, members, extra)
  size = _POPULATION_SIZE.value or (4 if jax.default_backend() == "cpu" else 64)
  units = sweeps.populations(_CONFIG.value, members, size)
  if _DRY_RUN.value:
    print(sweeps.describe(workdir, members, spec, extra, units))
    return
  sweeps.record(workdir, spec, extra, members)
  start = time.time()
  if _IN_PROCESS.value:
    failed = [unit for unit in units if not _train(_CONFIG.value, workdir, unit)]
    print(f"Sweep: {len(units) - len(failed)} of {len(units)} populations finished in "
          f"{time.time() - start:.0f}s.")
    if failed:
      sys.exit(1)
    return
  forward = [] if _SPLIT.value == "auto" else [f"--population_split={_SPLIT.value}"]
  outcome = sweeps.run_all(spec, workdir, members, [*forward, *extra], _PARALLEL.value, units)
  print(sweeps.summary_line(outcome, time.time() - start))
  for name in outcome["stopped"]:
    print(f"  stopped: {name} (saved; rerun the same command to resume it)")
  for name in outcome["failed"]:
    print(f"  failed: {name} (see {os.path.join(workdir, name, sweeps.LOG_FILE)})")
  if outcome["failed"]:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main, "sweep")
