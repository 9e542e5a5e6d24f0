"""Sweeps: a config file's ``sweep()`` as a list of runs, each in its own workdir.

A sweep is data next to ``get_config``: ``sweep()`` returns override dicts, e.g.
``[{"objective.beta": 0.5, "seed": 0}, ...]``, which a member applies with
ml_collections' ``config.update_from_flattened_dict(overrides)``. Member K trains in
``DIR/<name>``, the name spelled from its overrides (sorted, so stable when the
list is reordered or extended). ``DIR/sweep.json`` records the config file and
the extra overrides shared by all members; a rerun with others is refused, so
one sweep directory never mixes protocols.

Locally, members run as subprocesses (``experiments.sweep --member=K``), N at
a time; a member with results.json is skipped, a stopped one resumes from
its checkpoint, a failed one leaves ``failure.json`` and its log. On a TPU pod
every worker runs the same ``--member=K`` in-process.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from typing import Any, Optional, Sequence

import ml_collections
from absl import logging

from vae_jax.analysis import tables
from vae_jax import validation
from vae_jax.training import preemption
from vae_jax.training import workdir as workdir_lib

MANIFEST = tables.SWEEP_FILE  # the file names tables reads, from one place
FAILURE_FILE = tables.FAILURE_FILE
LOG_FILE = "log.txt"
SEED_FIELD = "seed"


class SweepError(ValueError):
  """The sweep's definition or its directory cannot be used as asked."""


@dataclasses.dataclass(frozen=True)
class Member:
  index: int
  name: str
  overrides: dict[str, Any]


def member_name(overrides: dict[str, Any]) -> str:
  """'model.latent_dim=10,seed=1': readable, stable, one directory level."""
  text = ",".join(f"{k}={overrides[k]}" for k in sorted(overrides))
  return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)


def _load_module(spec: str):
  path = spec.split(":", 1)[0]
  if not os.path.isfile(path):
    raise SweepError(f"--config={spec}: no such file.")
  module_spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_members(spec: str, config: ml_collections.ConfigDict) -> list[Member]:
  """The members of ``spec``'s ``sweep()``, checked against the fields of ``config``."""
  module = _load_module(spec)
  if not hasattr(module, "sweep"):
    raise SweepError(f"{spec} defines no sweep(); a sweep config returns its members as a "
                     f"list of override dicts, e.g. [{{'objective.beta': 0.5, 'seed': 0}}].")
  fields, members, names = validation.field_names(config), [], {}
  for index, overrides in enumerate(module.sweep()):
    for field in overrides:
      if field not in fields:
        raise SweepError(f"{spec}: sweep() member {index} sets unknown field {field!r}.")
    name = member_name(overrides)
    if name in names:
      raise SweepError(f"{spec}: members {names[name]} and {index} are the same run ({name}).")
    names[name] = index
    members.append(Member(index, name, dict(overrides)))
  if not members:
    raise SweepError(f"{spec}: sweep() returned no members.")
  return members


def record(workdir: str, spec: str, extra: Sequence[str], members: list[Member]) -> None:
  """Writes sweep.json; refuses a directory that holds a sweep of another config/overrides."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, MANIFEST)
  old = workdir_lib.read_json(path)
  if old is not None and (old["config"], old["extra_overrides"]) != (spec, list(extra)):
    raise SweepError(
        f"{workdir} holds a sweep of --config={old['config']} with overrides "
        f"{old['extra_overrides'] or 'none'}; this one is --config={spec} with "
        f"{list(extra) or 'none'}. Use another --workdir: one directory, one protocol.")
  check_members(None, members, extra)
  workdir_lib.write_json(path, {
      "config": spec, "extra_overrides": list(extra),
      "members": [dataclasses.asdict(m) for m in members]})


def check_members(config: Optional[ml_collections.ConfigDict], members: list[Member],
                  extra: Sequence[str]) -> None:
  """Refuses the sweep as its members' own runs would refuse them, before anything is made.

  ``config``: the sweep config with the extra overrides applied (None: only the
  clash check). Each member's config is validated exactly as its run validates it
  (``validation.validate``), so ``--dry_run`` and the driver refuse what a member
  would, instead of launching it into an empty directory.
  """
  swept = sorted({f for m in members for f in m.overrides})
  clash = [a for a in extra if a.split("=", 1)[0].removeprefix("--config.") in swept]
  if clash:
    raise SweepError(f"{', '.join(clash)}: these fields are swept by the members ("
                     f"{', '.join(swept)}); an extra override cannot also set them.")
  for member in members if config is not None else ():
    member_config = ml_collections.ConfigDict(config.to_dict())
    member_config.update_from_flattened_dict(member.overrides)
    try:
      validation.validate(member_config)
    except validation.ConfigError as e:
      raise validation.ConfigError(f"{e} (sweep member {member.index}: {member.name})") from None


def status(workdir: str, member: Member) -> str:
  """'done' (results.json), 'failed' (failure.json), 'started' or 'missing'."""
  directory = os.path.join(workdir, member.name)
  if os.path.exists(os.path.join(directory, workdir_lib.RESULTS_FILE)):
    return "done"
  if os.path.exists(os.path.join(directory, FAILURE_FILE)):
    return "failed"
  if os.path.exists(os.path.join(directory, "checkpoints")):
    return "started"
  return "missing"


def member_command(spec: str, workdir: str, member: Member, extra: Sequence[str]) -> list[str]:
  # --verbose: the member's log.txt is its log file, tracebacks included.
  return [sys.executable, "-m", "experiments.sweep", f"--config={spec}",
          f"--workdir={workdir}", f"--member={member.index}", "--verbose", *extra]


def _tail(path: str, lines: int = 15) -> str:
  with open(path, encoding="utf-8", errors="replace") as f:
    return "".join(f.readlines()[-lines:])


class _Running:
  """One member's subprocess, its output appended to DIR/<name>/log.txt."""

  def __init__(self, command: list[str], directory: str, member: Member):
    os.makedirs(directory, exist_ok=True)
    failure = os.path.join(directory, FAILURE_FILE)
    if os.path.exists(failure):  # a new attempt; the old one's output stays in log.txt
      os.remove(failure)
    self.member, self.directory, self.start = member, directory, time.time()
    self.log = os.path.join(directory, LOG_FILE)
    with open(self.log, "a", encoding="utf-8") as log:
      log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
      log.flush()
      self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    self.stopped = False

  def stop(self) -> None:
    """Asks the member to save and stop: one SIGTERM (a second could abort its save)."""
    if not self.stopped and self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
    self.stopped = True

  def finish(self) -> str:
    """The outcome once the process has ended: 'done', 'stopped' or 'failed'."""
    code = self.proc.returncode
    if os.path.exists(os.path.join(self.directory, workdir_lib.RESULTS_FILE)):
      return "done"
    # Exit 0 without results: it saved and stopped on a signal. Killed by the signal
    # it was sent: it had not yet installed its handler, so had nothing unsaved.
    if code == 0 or (self.stopped and code in (-signal.SIGTERM, -signal.SIGINT)):
      return "stopped"
    record_failure(self.directory, code, self.log, _tail(self.log))
    return "failed"


def record_failure(directory: str, returncode: Optional[int], log: str, tail: str) -> None:
  """A member's failure.json, the same whether the driver or ``--member=K`` ran it."""
  workdir_lib.write_json(os.path.join(directory, FAILURE_FILE),
                         {"returncode": returncode, "log": log, "tail": tail})


def record_member_error(directory: str, log: str, error: BaseException) -> None:
  """failure.json for ``--member=K`` that raised: exit status 1 (the mains' for an error),
  the end of its traceback as the tail. Never a second error on top of the first."""
  tail = "".join(traceback.format_exception(error)).splitlines()[-15:]
  try:
    os.makedirs(directory, exist_ok=True)
    record_failure(directory, 1, log, "\n".join(tail) + "\n")
  except OSError as e:
    logging.warning("Could not write %s in %s: %s", FAILURE_FILE, directory, e)


def run_all(spec: str, workdir: str, members: list[Member], extra: Sequence[str],
            parallel: int) -> dict[str, list[str]]:
  """Runs every member not yet done, ``parallel`` at a time; returns names by outcome.

  A stop asked of this process (SIGTERM, Ctrl-C: ``preemption``) is passed on to each
  running member as one SIGTERM; each saves and stops, and a rerun resumes it.
  """
  outcome: dict[str, list[str]] = {"done": [], "skipped": [], "failed": [], "stopped": []}
  queue = []
  for member in members:
    if status(workdir, member) == "done":
      outcome["skipped"].append(member.name)
    else:
      queue.append(member)
  logging.info("Sweep %s: %d members, %d already done, %d to run, %d at a time.", spec,
               len(members), len(outcome["skipped"]), len(queue), parallel)
  running: list[_Running] = []
  with preemption.PreemptionWatcher(lambda _: False):  # handlers, if no main installed them
    while queue or running:
      while queue and len(running) < parallel and not preemption.requested():
        member = queue.pop(0)
        running.append(_Running(member_command(spec, workdir, member, extra),
                                os.path.join(workdir, member.name), member))
        logging.info("Started member %d: %s", member.index, member.name)
      if preemption.requested():
        for run in running:
          run.stop()
        queue.clear()
      time.sleep(0.2)
      for run in [r for r in running if r.proc.poll() is not None]:
        running.remove(run)
        result = run.finish()
        outcome[result].append(run.member.name)
        logging.log(logging.INFO if result == "done" else logging.WARNING,
                    "Member %d (%s): %s after %.0fs%s", run.member.index, run.member.name,
                    result, time.time() - run.start,
                    f"; see {run.log}" if result == "failed" else "")
  return outcome


def member_by_index(members: list[Member], index: int) -> Member:
  if not 0 <= index < len(members):
    raise SweepError(f"--member={index}: the sweep has members 0..{len(members) - 1}.")
  return members[index]


def describe(workdir: str, members: list[Member], spec: str,
             extra: Sequence[str]) -> str:
  """The --dry_run listing: index, status, directory and the command of each member."""
  lines = [f"{len(members)} members of {spec} in {workdir}:"]
  for member in members:
    lines.append(f"  [{member.index:3d}] {status(workdir, member):8s} {member.name}")
  lines.append(f"Member K alone: python -m experiments.sweep --config={spec} "
               f"--workdir={workdir} --member=K {' '.join(extra)}".rstrip())
  return "\n".join(lines)


def summary_line(outcome: dict[str, list[str]], seconds: Optional[float] = None) -> str:
  counts = ", ".join(f"{len(v)} {k}" for k, v in outcome.items() if v)
  return f"Sweep: {counts}" + (f" in {seconds:.0f}s" if seconds is not None else "") + "."
