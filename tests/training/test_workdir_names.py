"""The workdir of a run started without --workdir: named once, always new, logged."""

import datetime
import glob
import json
import os
import subprocess
import sys

import pytest
from absl import logging

from tests.conftest import REPO
from vae_jax.training import workdir as workdir_lib
from vae_jax.training import workdir_names

NOW = datetime.datetime(2026, 12, 2, 8, 15, 0)


@pytest.mark.parametrize("spec, name", [
    ("configs/beta.py", "beta"),
    ("configs/beta.py:beta=4", "beta_beta=4"),
    ("configs/beta.py:beta=0.5,latent_dim=10", "beta_beta=0.5_latent_dim=10"),
    ("/home/me/my configs/try 2.py", "try_2"),
    ("studies/amortization/config.py:data=squares", "config_data=squares"),
])
def test_the_name_is_the_config_file_and_its_argument(spec, name):
  assert workdir_names.run_name(spec) == name
  assert workdir_names.default_workdir(spec, now=NOW) == f"workdirs/{name}-20261202-081500"


def test_a_taken_name_gets_the_next_free_suffix(tmp_path):
  root = str(tmp_path)
  first = workdir_names.default_workdir("configs/beta.py", root=root, now=NOW)
  os.mkdir(first)
  second = workdir_names.default_workdir("configs/beta.py", root=root, now=NOW)
  assert second == first + "-2"
  os.symlink("/nonexistent", second)  # even a dangling link is taken
  assert workdir_names.default_workdir("configs/beta.py", root=root, now=NOW) == first + "-3"


def test_every_run_without_workdir_gets_a_new_folder_and_says_which(tmp_path, monkeypatch):
  said = []
  monkeypatch.setattr(logging, "info", lambda fmt, *args: said.append(fmt % args))
  root = str(tmp_path / "workdirs")
  made = [workdir_lib.new_default("configs/beta.py", root=root) for _ in range(3)]
  assert len(set(made)) == 3 and all(os.path.isdir(p) and not os.listdir(p) for p in made)
  assert all(os.path.basename(p).startswith("beta-") for p in made)
  assert len(said) == 3 and f"--workdir={made[0]}" in said[0] and made[0] in said[0]


def test_default_workdir_refusals_are_one_line(tmp_path):
  with pytest.raises(workdir_lib.WorkdirError, match="--workdir is required when 2 processes"):
    workdir_lib.new_default("configs/beta.py", num_processes=2, root=str(tmp_path))
  (tmp_path / "file").write_text("")
  with pytest.raises(workdir_lib.WorkdirError,
                     match=r"Cannot create a workdir under .*file.*pass --workdir=DIR"):
    workdir_lib.new_default("configs/beta.py", root=str(tmp_path / "file"))
  assert os.listdir(tmp_path) == ["file"]


def test_launch_sh_names_it_with_the_same_module(tmp_path):
  """launch.sh tpu-train runs the module with a bare python3: standard library only."""
  proc = subprocess.run([sys.executable, "-S", "-m", "vae_jax.training.workdir_names",
                         "configs/beta.py:beta=4"], cwd=REPO, capture_output=True, text=True,
                        check=True, env={"PATH": os.environ["PATH"]})
  assert proc.stdout.startswith("workdirs/beta_beta=4-") and not proc.stderr
  with open(os.path.join(REPO, "launch.sh"), encoding="utf-8") as f:
    assert "python3 -m vae_jax.training.workdir_names" in f.read()


@pytest.mark.slow
def test_the_command_without_workdir_trains_in_a_new_named_folder(tmp_path):
  """The card's command as written: python -m experiments.train --config=configs/beta.py."""
  small = ["--config.data.name=digits", "--config.batch_size=64", "--config.num_train_steps=10",
           "--config.steps_per_dispatch=10", "--config.log_every=10", "--config.eval_every=10",
           "--config.checkpoint_every=10", "--config.eval.batch_size=100",
           "--config.model.width=32", "--config.eval.num_importance_samples=5",
           "--config.eval.num_importance_samples_during_training=0",
           "--config.images.num_reconstructions=4", "--config.images.num_samples=4"]
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--config={REPO}/configs/beta.py", *small],
      cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  [workdir] = glob.glob(str(tmp_path / "workdirs" / "beta-*"))
  name = os.path.relpath(workdir, tmp_path)
  assert f"No --workdir given: this run writes to {name}." in proc.stderr
  assert f"rerun with --workdir={name}" in proc.stderr
  with open(os.path.join(workdir, "results.json"), encoding="utf-8") as f:
    assert json.load(f)["steps"] == 10
  # Refused once the data is loaded (after the folder was named): no folder is left.
  refused = subprocess.run(
      [sys.executable, "-m", "experiments.train", f"--config={REPO}/configs/beta.py", *small,
       "--config.batch_size=4000"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2"))
  assert refused.returncode == 1 and "FATAL ConfigError: config.batch_size=4000" in refused.stderr
  assert glob.glob(str(tmp_path / "workdirs" / "*")) == [workdir]


def test_a_refused_runs_new_folder_is_removed_and_its_log_kept(tmp_path):
  workdir = workdir_lib.new_default("configs/beta.py", root=str(tmp_path))
  for name, text in (("train.log", "the log\n"), (".lock", "pid 1\n")):
    with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
      f.write(text)
  moved = workdir_lib.remove_if_unused(workdir, "train.log")
  try:
    assert not os.path.exists(workdir) and os.listdir(tmp_path) == []
    with open(moved, encoding="utf-8") as f:
      assert f.read() == "the log\n"
  finally:
    os.remove(moved)
  used = workdir_lib.new_default("configs/beta.py", root=str(tmp_path))
  open(os.path.join(used, "config.json"), "w", encoding="utf-8").close()
  assert workdir_lib.remove_if_unused(used, "train.log") is None and os.path.isdir(used)
