"""The files of a run's workdir: its config, its results, and guards around them.

A workdir belongs to one config. Restarting the same config resumes it; a
different config, or a finished run, is refused rather than overwritten.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile
from typing import Any, Optional

import ml_collections

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets",
            "tensorflow-cpu", "clu", "ml-collections", "numpy")


class WorkdirError(RuntimeError):
  """The workdir holds something this run must not overwrite."""


def config_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort(sort_keys=True))


def prepare(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Creates the workdir and records the config; refuses finished or foreign runs."""
  os.makedirs(workdir, exist_ok=True)
  results = os.path.join(workdir, RESULTS_FILE)
  if os.path.exists(results):
    raise WorkdirError(
        f"{results} exists: {workdir} holds a finished run. Use a new --workdir (or move "
        f"the old one away); finished results are never overwritten.")
  path = os.path.join(workdir, CONFIG_FILE)
  new = config_dict(config)
  old = read_json(path)
  if old is not None:
    if old != new:
      changed = sorted(_diff(old, new))
      raise WorkdirError(
          f"{workdir} holds a run with a different config (fields differ: "
          f"{', '.join(changed)}). Use a new --workdir, or rerun with the recorded "
          f"config ({path}) to resume it.")
    return
  write_json(path, new)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run recorded in its workdir."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise WorkdirError(f"{path} does not exist: {workdir} is not a vae_jax run directory.")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def read_json(path: str) -> Optional[dict]:
  """The JSON object in ``path``, or None if there is no such file."""
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


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
