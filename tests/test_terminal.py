"""The terminal shows the project's lines: not those of libraries installed under the repo."""

import json
import logging
import os

import pytest

from tests.conftest import REPO
from vae_jax.analysis import gallery
from vae_jax.training import preemption
from vae_jax.training import workdir as workdir_lib


@pytest.fixture(scope="module")
def cli():
  from experiments import cli as module  # pylint: disable=g-import-not-at-top
  preemption.uninstall()  # importing it installs the mains' handlers: not in pytest's process
  return module


def _record(path, level=logging.INFO, message="a line"):
  return logging.LogRecord("absl", level, os.path.join(REPO, path), 1, message, None, None)


def test_libraries_in_the_repositorys_venv_are_not_the_project(cli):
  """launch.sh setup makes .venv inside the repository: JAX's 'Unable to initialize
  backend' line and orbax's warnings come from there and stay in the log file."""
  shown = cli._Terminal().filter  # pylint: disable=protected-access
  site = ".venv/lib/python3.11/site-packages"
  assert not shown(_record(f"{site}/jax/_src/xla_bridge.py",
                           message="Unable to initialize backend 'tpu': ..."))
  assert not shown(_record(f"{site}/orbax/checkpoint/checkpoint_manager.py", logging.WARNING))
  assert shown(_record(f"{site}/orbax/checkpoint/x.py", logging.ERROR))  # one-line errors
  assert not shown(_record(f"{site}/orbax/checkpoint/x.py", logging.ERROR, "two\nlines"))
  for ours in ("vae_jax/training/loop.py", "experiments/train.py",
               "studies/amortization/run.py", "configs/beta.py"):
    assert shown(_record(ours)), ours
  assert not shown(_record("tests/conftest.py"))  # not a package the commands run


def _failed_sweep(root, count):
  members = []
  for i in range(count):
    name = f"objective.beta={i}"
    members.append({"index": i, "name": name, "overrides": {"objective.beta": i}})
    if i % 2 == 0:  # the others never started: "missing"
      os.makedirs(os.path.join(root, name))
      with open(os.path.join(root, name, "failure.json"), "w", encoding="utf-8") as f:
        json.dump({"returncode": 1, "tail": "ValueError: boom"}, f)
  with open(os.path.join(root, "sweep.json"), "w", encoding="utf-8") as f:
    json.dump({"members": members}, f)


def test_a_sweep_without_results_gets_one_line_not_one_per_member(tmp_path, caplog):
  _failed_sweep(str(tmp_path), 21)
  with caplog.at_level(logging.INFO):
    with pytest.raises(workdir_lib.WorkdirError, match="No finished member"):
      gallery.pictures_of_sweep(str(tmp_path))
  lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(lines) == 1, lines
  assert lines[0].startswith("Not pictured: 21 sweep members without results: "
                             "11 failed (objective.beta=0, objective.beta=2, "
                             "objective.beta=4, ... (8 more)); 10 missing ("), lines[0]


@pytest.mark.slow
def test_tensorflows_start_up_lines_do_not_reach_the_terminal(tmp_path):
  """TF prints a oneDNN notice (and absl's "before InitializeLog" lines) from C++ as it
  loads, on CPUs where it enables oneDNN (Intel Xeons here), past every Python filter.
  A command that loads TF and then refuses shows its one line and nothing else."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
  proc = subprocess.run([sys.executable, "-m", "experiments.tables",
                         f"--workdir={tmp_path / 'none'}"], capture_output=True, text=True,
                        cwd=REPO, env=env, timeout=300)
  lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
  assert proc.returncode == 1
  assert len(lines) == 1 and lines[0].startswith("FATAL"), lines
