"""The files of a run's workdir: its config, its results, and guards around them.

A workdir belongs to one run. Restarting the same config resumes it. A
different config, or a finished run, is refused unless the user asks:
``overwrite`` sets the old run aside (moved, never deleted), ``allow_changes``
continues it with the named fields changed (recorded in config_history.jsonl;
a finished run's results are archived first). A lock keeps a second process
out while one runs; the OS releases it when the process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import tempfile
from typing import Any, Iterator, Mapping, Optional, Sequence

import ml_collections
from absl import logging

from vae_jax.data import splits
from vae_jax.objectives import training_objectives
from vae_jax.training import workdir_names

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
METRICS_FILE = "metrics.jsonl"  # training/metrics.py writes it, analysis/ reads it
HISTORY_FILE = "config_history.jsonl"
LOCK_FILE = ".lock"
ARCHIVED_WITH_RESULTS = (RESULTS_FILE, "reconstructions.png", "samples.png")
# Fields a run may continue with, changed: none alters the shape of the saved
# state (model, optimizer structure) or the data and its order. model.conv_impl
# picks how a layer is computed, not its parameters (a run recorded before the
# field existed continues with --allow_config_changes=model.conv_impl).
CHANGEABLE = ("num_epochs", "num_train_steps", "steps_per_dispatch", "log_every", "eval_every",
              "checkpoint_every", "keep_checkpoints", "keep_best_checkpoint", "eval", "images",
              "objective", "optim.learning_rate", "optim.schedule", "optim.warmup_steps",
              "optim.weight_decay", "optim.max_consecutive_nonfinite", "data.data_dir",
              "data.manual_dir", "data.fallback", "debug", "model.conv_impl", "selection",
              "optim.decay_epochs", "optim.decay_factor", "optim.decay_rate")
# Fields added since runs were first recorded, with the values that reproduce what those
# runs did (the data fields: splits.recorded_defaults). Filled in when a config.json is read.
ADDED_FIELDS = {"optim": {"decay_epochs": [], "decay_factor": 0.1, "decay_rate": 1.0},
                "selection": {"metric": "neg_elbo", "patience": 0},
                "eval": {"extra_num_importance_samples": []}, "objective": {}}
for _field, _value in training_objectives.ADDED_FIELDS.items():  # the objectives' own
  ADDED_FIELDS[_field.split(".")[0]][_field.split(".")[1]] = _value
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets",
            "tensorflow-cpu", "clu", "ml-collections", "numpy")


class WorkdirError(RuntimeError):
  """The workdir holds something this run must not overwrite."""


def config_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def _now() -> str:
  return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def _covered(field: str, prefixes: Sequence[str]) -> bool:
  return any(field == p or field.startswith(p + ".") for p in prefixes)


def lookup(tree: Optional[Mapping[str, Any]], field: str) -> Any:
  """The value at dotted ``field`` ('dataset.used') of a run's JSON; None where there is none.

  ml_collections' own dotted get on the tree as a ConfigDict. A path that ends
  in a missing key, or runs through a value that is not an object (a number,
  null), reads as None: a field an older run never recorded must not stop a
  table or a resume. A sub-tree comes back as a plain dict, ready for JSON.
  """
  try:
    value = ml_collections.ConfigDict(tree).get(field)
  except TypeError:  # ConfigDict['a.b'] indexes a's value, here not a ConfigDict
    return None
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


@dataclasses.dataclass
class Plan:
  """What ``prepare`` found and ``apply`` will do: nothing is changed in between."""
  workdir: str
  config: dict
  changes: dict[str, list]     # {field: [old, new]} of a continued run
  write_config: bool
  archive_results: bool


def prepare(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool = False,
            allow_changes: Sequence[str] = ()) -> dict[str, list]:
  """``plan`` and ``apply`` at once; returns the {field: [old, new]} changes."""
  planned = plan(workdir, config, overwrite=overwrite, allow_changes=allow_changes)
  apply(planned)
  return planned.changes


def plan(workdir: str, config: ml_collections.ConfigDict, *, overwrite: bool = False,
         allow_changes: Sequence[str] = ()) -> Plan:
  """Checks the workdir against the config; changes only what ``--overwrite`` asks.

  Refuses a finished run or a different config unless ``overwrite`` (the old run
  is moved to WORKDIR.replaced-TIME) or ``allow_changes`` lists every changed field.
  Archiving results and rewriting config.json wait for ``apply``, after the
  caller's own checks (e.g. a checkpoint past the new total), so that a continuation
  refused later has moved and rewritten nothing.
  """
  check_directory(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  results = os.path.join(workdir, RESULTS_FILE)
  new, old = config_dict(config), None
  if overwrite and set(os.listdir(workdir)) - {LOCK_FILE}:
    _move_aside(workdir)  # before reading: a damaged config.json is set aside too
  else:
    old = _read_recorded(path)
  changes = {}
  if old is not None and old != new:
    changed = sorted(_diff(old, new))
    hint = (f"Use a new --workdir; or --allow_config_changes={','.join(changed)} to continue "
            f"this run with them changed; or --overwrite to set the old run aside.")
    unlisted = [f for f in changed if not _covered(f, allow_changes)]
    if unlisted:
      raise WorkdirError(f"{workdir} holds a run with a different config (fields differ: "
                         f"{', '.join(changed)}; not allowed to change: "
                         f"{', '.join(unlisted)}). {hint}")
    frozen = [f for f in changed if not _covered(f, CHANGEABLE)]
    if frozen:
      raise WorkdirError(
          f"{', '.join(frozen)} cannot change when continuing a run: they change the saved "
          f"state or the data. Use a new --workdir (or --overwrite). Changeable: "
          f"{', '.join(CHANGEABLE)}.")
    changes = {f: [lookup(old, f), lookup(new, f)] for f in changed}
  if os.path.exists(results) and not changes:
    raise WorkdirError(
        f"{results} exists: {workdir} holds a finished run. Use a new --workdir; or "
        f"continue it with changed fields (e.g. --config.num_epochs=20 "
        f"--allow_config_changes=num_epochs); or --overwrite to set it aside. Finished "
        f"results are never overwritten.")
  return Plan(workdir, new, changes, old != new, os.path.exists(results))


def apply(planned: Plan, step: Optional[int] = None) -> None:
  """Archives a finished run's results, records the config (and its changes at ``step``)."""
  if planned.archive_results:
    _archive_results(planned.workdir)
  if planned.write_config:
    write_json(os.path.join(planned.workdir, CONFIG_FILE), planned.config)
  if planned.changes and step is not None:
    record_changes(planned.workdir, planned.changes, step)
    logging.warning("Continuing from step %d with changed fields: %s", step, planned.changes)


def check_directory(workdir: str, label: str = "") -> None:
  """One clear line for a --workdir that cannot hold a run (a file, under a file, read-only).

  ``label``: how the error names the directory (default: --workdir=WORKDIR).
  """
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise WorkdirError(f"{label or '--workdir=' + workdir} is a file, not a directory; give a directory "
                       f"(a new one, or an existing run's).")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise WorkdirError(f"{label or '--workdir=' + workdir} is under {parent}, which is a file, not a "
                       f"directory; give a directory path.")
  if _read_only_file_system(parent):  # os.access says no here too, but not for permissions
    raise WorkdirError(f"{label or '--workdir=' + workdir}: {parent} is on a read-only file "
                       f"system; give a directory on a writable one (or remount it "
                       f"read-write).")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise WorkdirError(f"{label or '--workdir=' + workdir}: {parent} is not writable (permission denied) "
                       f"for this user; give a directory you can write, or change its "
                       f"permissions.")


def _read_only_file_system(path: str) -> bool:
  try:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
  except OSError:
    return False


def record_changes(workdir: str, changes: dict[str, list], step: int) -> None:
  """Appends one line to config_history.jsonl: which fields changed at which step."""
  with open(os.path.join(workdir, HISTORY_FILE), "a", encoding="utf-8") as f:
    f.write(json.dumps({"time": _now(), "resumed_at_step": step, "changes": changes},
                       sort_keys=True) + "\n")


def _move_aside(workdir: str) -> None:
  target = f"{os.path.abspath(workdir).rstrip(os.sep)}.replaced-{_now()}"
  os.makedirs(target)
  for name in os.listdir(workdir):
    if name != LOCK_FILE:
      shutil.move(os.path.join(workdir, name), os.path.join(target, name))
  logging.warning("--overwrite: moved the previous run in %s to %s (nothing deleted).",
                  workdir, target)


def _archive_results(workdir: str) -> None:
  step = read_json(os.path.join(workdir, RESULTS_FILE))["steps"]
  target = os.path.join(workdir, "archive", f"step_{step:08d}-{_now()}")
  os.makedirs(target)
  for name in ARCHIVED_WITH_RESULTS:
    if os.path.exists(os.path.join(workdir, name)):
      shutil.move(os.path.join(workdir, name), os.path.join(target, name))
  logging.warning("Continuing a finished run: its results are archived in %s.", target)


@contextlib.contextmanager
def lock(workdir: str) -> Iterator[None]:
  """Holds WORKDIR/.lock (flock) while the body runs; refuses if another process does."""
  check_directory(workdir)
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "unknown process"
    os.close(fd)
    raise WorkdirError(
        f"{workdir} is in use by another run ({holder}). Wait for it or stop it; the lock "
        f"is released as soon as that process ends.") from None
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the flock


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run recorded in its workdir."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise WorkdirError(f"{path} does not exist: {workdir} is not a vae_jax run directory.")
  return ml_collections.ConfigDict(_read_recorded(path))


def _read_recorded(path: str) -> Optional[dict]:
  """A recorded config.json with the fields added since it was written filled in."""
  recorded = read_json(path)
  if recorded is not None:
    from vae_jax import models  # pylint: disable=g-import-not-at-top  (JAX; not for tables)
    filled = models.upgrade_recorded(recorded) + _fill_added(recorded)
    if filled:
      logging.info("%s predates %s: read with the values that reproduce its run.", path,
                   ", ".join(filled))
  return recorded


def _fill_added(recorded: dict) -> list[str]:
  """Fills in place the non-model fields a recorded config lacks; returns their names."""
  added = dict(ADDED_FIELDS, data=splits.recorded_defaults(recorded.get("data", {})))
  filled = []
  for group, fields in added.items():
    values = recorded.setdefault(group, {})
    for field, value in fields.items():
      if field not in values:
        values[field] = value
        filled.append(f"{group}.{field}")
  return filled


def read_json(path: str) -> Optional[dict]:
  """The JSON object in ``path``, or None if there is no such file."""
  if not os.path.exists(path):
    return None
  remedy = ("restore it from a copy, or move the run aside with --overwrite (nothing is "
            "deleted)")
  with open(path, encoding="utf-8") as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as e:
      raise WorkdirError(f"{path} is damaged (not valid JSON: {e.msg}, line {e.lineno}, "
                         f"column {e.colno}); {remedy}.") from None
    except UnicodeDecodeError as e:  # random bytes: not even text
      raise WorkdirError(f"{path} is damaged (not UTF-8 text: byte 0x{e.object[e.start]:02x} "
                         f"at offset {e.start}); {remedy}.") from None


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in set(old) | set(new):
      out += _diff(old.get(key), new.get(key), f"{prefix}{key}.")
    return out
  return [] if old == new else [prefix.rstrip(".")]


def write_json(path: str, obj: Any) -> None:
  """Atomic write: readers see the old file or the whole new one, never half."""
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile("w", dir=directory, delete=False, suffix=".tmp",
                                   encoding="utf-8") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  os.chmod(f.name, 0o644)
  os.replace(f.name, path)


def versions() -> dict[str, str]:
  out = {"python": platform.python_version()}
  for package in PACKAGES:
    try:
      out[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def remove_if_unused(workdir: str, log_name: str) -> Optional[str]:
  """Removes a folder ``new_default`` made, if the run was refused before using it.

  Such a folder holds only the run's log (and its lock): left behind, every
  refused command would add one to workdirs/. The log is kept, moved to the
  temporary directory; returns its new path (None: the folder holds more, it stays).
  """
  try:
    names = set(os.listdir(workdir))
  except OSError:
    return None
  if not names <= {log_name, LOCK_FILE}:
    return None
  kept = None
  if log_name in names:
    kept = os.path.join(tempfile.gettempdir(), f"vae_jax-{os.path.basename(workdir)}-{log_name}")
    shutil.move(os.path.join(workdir, log_name), kept)
  if LOCK_FILE in names:
    os.remove(os.path.join(workdir, LOCK_FILE))
  os.rmdir(workdir)
  return kept


def new_default(config_spec: str, *, num_processes: int = 1,
                root: str = workdir_names.ROOT) -> str:
  """Creates the workdir of a run started without --workdir and says where it is.

  Always a new folder (workdir_names: ROOT/NAME-TIMESTAMP), claimed with an
  exclusive mkdir, so two runs started in the same second get two folders and a
  rerun never resumes or mixes into an earlier run. The processes of a
  multi-host job would each pick their own: they must be given one.
  """
  if num_processes > 1:
    raise WorkdirError(
        f"--workdir is required when {num_processes} processes train as one job: all must "
        f"write the same folder, on storage every host sees (launch.sh tpu-train picks one "
        f"for all workers).")
  try:
    os.makedirs(root, exist_ok=True)
    while True:
      path = workdir_names.default_workdir(config_spec, root=root)
      try:
        os.mkdir(path)
        break
      except FileExistsError:  # another run took the name since: take the next
        continue
  except OSError as e:
    raise WorkdirError(
        f"Cannot create a workdir under {os.path.abspath(root)} ({e.strerror}); pass "
        f"--workdir=DIR, a folder you can write.") from None
  logging.info("No --workdir given: this run writes to %s. To resume or continue it, rerun "
               "with --workdir=%s (a run without --workdir always starts anew, in a new "
               "folder).", path, path)
  return path
