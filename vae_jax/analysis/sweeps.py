"""Sweeps: a config file's ``sweep()`` as a list of runs, each in its own workdir.

A sweep is data next to ``get_config``: ``sweep()`` returns override dicts, e.g.
``[{"objective.beta": 0.5, "seed": 0}, ...]``, which a member applies with
ml_collections' ``config.update_from_flattened_dict(overrides)``. Member K trains in
``DIR/<name>``, the name spelled from its overrides (sorted, so stable when the
list is reordered or extended). ``DIR/sweep.json`` records the config file and
the extra overrides shared by all members; a rerun with others is refused, so
one sweep directory never mixes protocols.

Members that differ only in values (``training.population``: the seed, β, the
learning rate, free bits, KL warm-up and, for families that pad their latents,
the latent dimension) train together as populations of at most
``--population_size``, one compiled program each (``populations``). Locally, each
population runs as a subprocess (``experiments.sweep --members=K,L,...``), N at a
time, its output in every member's log.txt; a member with results.json is skipped,
a stopped one resumes from its checkpoint, a failed one leaves ``failure.json``.
``--population_size=1`` runs one member per process, as sweeps did before
populations. On a TPU pod every worker runs the same populations in-process
(``--in_process``), or the same ``--member=K``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Optional, Sequence

import ml_collections
from absl import logging

from vae_jax import models
from vae_jax import validation
from vae_jax.analysis import tables
from vae_jax.data import datasets
from vae_jax.training import population
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
    try:
      validation.validate(member_config(config, member))
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


def member_config(config: ml_collections.ConfigDict, member: Member) -> ml_collections.ConfigDict:
  """The sweep config (extra overrides applied) with ``member``'s overrides."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.update_from_flattened_dict(member.overrides)
  return out


def populations(config: ml_collections.ConfigDict, members: Sequence[Member],
                size: int) -> list[list[Member]]:
  """``members`` as populations of at most ``size`` that can train as one program.

  Members whose configs differ only where a population lets them
  (``population.compatibility_key``) go together, in the sweep's order.
  """
  groups: dict[str, list[Member]] = {}
  for member in members:
    member_cfg = member_config(config, member)
    model = models.build(member_cfg, datasets.info(member_cfg.data.name))
    key = population.compatibility_key(member_cfg, population.supports_latent_mask(model))
    groups.setdefault(key, []).append(member)
  return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]


def command(spec: str, workdir: str, unit: Sequence[Member], extra: Sequence[str]) -> list[str]:
  """The subprocess that trains ``unit``: one member, or a population."""
  which = (f"--member={unit[0].index}" if len(unit) == 1 else
           "--members=" + ",".join(str(m.index) for m in unit))
  # --verbose: the members' log.txt is their log file, tracebacks included.
  return [sys.executable, "-m", "experiments.sweep", f"--config={spec}",
          f"--workdir={workdir}", which, "--verbose", *extra]


def record_failure(directory: str, returncode: Optional[int], log: str,
                   error: Optional[str] = None) -> None:
  """failure.json: why a member failed, where its log is, and the log's end; the same
  whether the driver, ``--member=K`` or a population recorded it."""
  workdir_lib.write_json(os.path.join(directory, FAILURE_FILE), {
      "returncode": returncode, "log": log, "error": error,
      "tail": error or (_tail(log) if os.path.exists(log) else "")})


def _tail(path: str, lines: int = 15) -> str:
  with open(path, encoding="utf-8", errors="replace") as f:
    return "".join(f.readlines()[-lines:])


class _Running:
  """One subprocess (a member or a population), its output appended to each member's
  DIR/<name>/log.txt."""

  def __init__(self, command_line: list[str], workdir: str, unit: Sequence[Member]):
    self.unit, self.start = list(unit), time.time()
    self.directories = [os.path.join(workdir, m.name) for m in unit]
    self.logs = [os.path.join(d, LOG_FILE) for d in self.directories]
    for directory in self.directories:
      os.makedirs(directory, exist_ok=True)
      failure = os.path.join(directory, FAILURE_FILE)
      if os.path.exists(failure):  # a new attempt; the old one's output stays in log.txt
        os.remove(failure)
    header = f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command_line)}\n"
    self._files = [open(log, "a", encoding="utf-8") for log in self.logs]  # pylint: disable=consider-using-with
    for f in self._files:
      f.write(header)
      f.flush()
    self.proc = subprocess.Popen(command_line, stdout=subprocess.PIPE,  # pylint: disable=consider-using-with
                                 stderr=subprocess.STDOUT, text=True, errors="replace")
    self._tee = threading.Thread(target=self._copy, daemon=True)
    self._tee.start()
    self.stopped = False

  def _copy(self) -> None:
    for line in self.proc.stdout:
      for f in self._files:
        f.write(line)
        f.flush()
    for f in self._files:
      f.close()

  def stop(self) -> None:
    """Asks the process to save and stop: one SIGTERM (a second could abort its save)."""
    if not self.stopped and self.proc.poll() is None:
      self.proc.send_signal(signal.SIGTERM)
    self.stopped = True

  def finish(self) -> list[str]:
    """Each member's outcome once the process has ended: 'done', 'stopped' or 'failed'."""
    self._tee.join()
    code, out = self.proc.returncode, []
    for directory, log in zip(self.directories, self.logs):
      if os.path.exists(os.path.join(directory, workdir_lib.RESULTS_FILE)):
        out.append("done")
      elif os.path.exists(os.path.join(directory, FAILURE_FILE)):
        out.append("failed")  # recorded by the population itself (a non-finite member)
      # Exit 0 without results: it saved and stopped on a signal. Killed by the signal
      # it was sent: it had not yet installed its handler, so had nothing unsaved.
      elif code == 0 or (self.stopped and code in (-signal.SIGTERM, -signal.SIGINT)):
        out.append("stopped")
      else:
        record_failure(directory, code, log)
        out.append("failed")
    return out


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
            parallel: int, units: Optional[list[list[Member]]] = None) -> dict[str, list[str]]:
  """Runs every member not yet done, ``parallel`` processes at a time; returns names by
  outcome. ``units``: the members grouped into populations (default: one per process).

  A stop asked of this process (SIGTERM, Ctrl-C: ``preemption``) is passed on to each
  running process as one SIGTERM; each saves and stops, and a rerun resumes it.
  """
  outcome: dict[str, list[str]] = {"done": [], "skipped": [], "failed": [], "stopped": []}
  todo = {m.name for m in members if status(workdir, m) != "done"}
  outcome["skipped"] = [m.name for m in members if m.name not in todo]
  queue = [[m for m in unit if m.name in todo] for unit in (units or [[m] for m in members])]
  queue = [unit for unit in queue if unit]
  logging.info("Sweep %s: %d members, %d already done, %d to run in %d processes, %d at a "
               "time.", spec, len(members), len(outcome["skipped"]), len(todo), len(queue),
               parallel)
  running: list[_Running] = []
  with preemption.PreemptionWatcher(lambda _: False):  # handlers, if no main installed them
    while queue or running:
      while queue and len(running) < parallel and not preemption.requested():
        unit = queue.pop(0)
        running.append(_Running(command(spec, workdir, unit, extra), workdir, unit))
        logging.info("Started %s", ", ".join(f"member {m.index}: {m.name}" for m in unit))
      if preemption.requested():
        for run in running:
          run.stop()
        queue.clear()
      time.sleep(0.2)
      for run in [r for r in running if r.proc.poll() is not None]:
        running.remove(run)
        for member, log, result in zip(run.unit, run.logs, run.finish()):
          outcome[result].append(member.name)
          logging.log(logging.INFO if result == "done" else logging.WARNING,
                      "Member %d (%s): %s after %.0fs%s", member.index, member.name, result,
                      time.time() - run.start, f"; see {log}" if result == "failed" else "")
  return outcome


def member_by_index(members: list[Member], index: int | str) -> Member:
  if not str(index).lstrip("-").isdigit() or not 0 <= int(index) < len(members):
    raise SweepError(f"--member(s)={index}: the sweep has members 0..{len(members) - 1}.")
  return members[int(index)]


def describe(workdir: str, members: list[Member], spec: str, extra: Sequence[str],
             units: Optional[list[list[Member]]] = None) -> str:
  """The --dry_run listing: index, status, directory and population of each member."""
  unit_of = {m.index: i for i, unit in enumerate(units or []) for m in unit}
  lines = [f"{len(members)} members of {spec} in {workdir}" +
           (f", in {len(units)} populations:" if units else ":")]
  for member in members:
    where = f"  population {unit_of[member.index]}" if units else ""
    lines.append(f"  [{member.index:3d}] {status(workdir, member):8s} {member.name}{where}")
  lines.append(f"Member K alone: python -m experiments.sweep --config={spec} "
               f"--workdir={workdir} --member=K {' '.join(extra)}".rstrip())
  return "\n".join(lines)


def summary_line(outcome: dict[str, list[str]], seconds: Optional[float] = None) -> str:
  counts = ", ".join(f"{len(v)} {k}" for k, v in outcome.items() if v)
  return f"Sweep: {counts}" + (f" in {seconds:.0f}s" if seconds is not None else "") + "."
