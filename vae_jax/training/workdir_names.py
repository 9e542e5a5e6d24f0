"""The folder a run gets when no --workdir is given: workdirs/NAME-TIMESTAMP.

``experiments.train`` and ``launch.sh`` (``tpu-train``, which must hand every
worker of a pod slice the same folder) both name it here, so they agree:
configs/beta.py:beta=4 started at 2026-12-02 08:15:00 trains in
workdirs/beta_beta=4-20261202-081500. A name already taken gets -2, -3, ...:
a run without --workdir always starts in a new folder, so rerunning the
command never resumes, overwrites or mixes into an earlier run; resuming one
means naming its folder with --workdir (the run logs which).

Standard library only: launch.sh runs ``python3 -m vae_jax.training.workdir_names
CONFIG`` on the user's own machine, where no .venv may exist.
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from typing import Optional

ROOT = "workdirs"  # relative to the working directory: the repository root


def run_name(config_spec: str) -> str:
  """The config file's name and its argument, as a folder name: beta.py:beta=4 -> beta_beta=4."""
  file, colon, arg = config_spec.partition(":")
  name = os.path.basename(file)
  name = name[:-len(".py")] if name.endswith(".py") else name
  return re.sub(r"[^A-Za-z0-9._=-]", "_", name + colon + arg)


def default_workdir(config_spec: str, *, root: str = ROOT,
                    now: Optional[datetime.datetime] = None) -> str:
  """ROOT/NAME-YYYYmmdd-HHMMSS (local time), with -2, -3, ... if that already exists."""
  stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
  base = os.path.join(root, f"{run_name(config_spec)}-{stamp}")
  path, n = base, 1
  while os.path.lexists(path):
    n += 1
    path = f"{base}-{n}"
  return path


if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python3 -m vae_jax.training.workdir_names CONFIG[:ARG]")
  print(default_workdir(sys.argv[1]))
