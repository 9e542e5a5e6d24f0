"""Sweeps end to end: members in their own workdirs, reruns skip, failures reported."""

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO
from vae_jax.analysis import sweeps

# A small sweep: 2 betas x 2 latent dims on embedded 8x8 digits, a few steps each.
SMALL_SWEEP = '''
from configs import default

def get_config():
  config = default.get_config()
  config.update_from_flattened_dict({FIELDS})
  return config

def sweep():
  return {MEMBERS}
'''
FIELDS = {"data.name": "digits", "batch_size": 64, "num_train_steps": 20,
          "steps_per_dispatch": 10, "log_every": 10, "eval_every": 20, "checkpoint_every": 20,
          "eval.batch_size": 100, "model.width": 32, "eval.num_importance_samples": 5,
          "eval.num_importance_samples_during_training": 0, "images.num_reconstructions": 8,
          "images.num_samples": 8}


def _config_file(tmp_path, members, name="small_sweep.py"):
  path = tmp_path / name
  path.write_text(textwrap.dedent(SMALL_SWEEP).replace("{FIELDS}", repr(FIELDS))
                  .replace("{MEMBERS}", repr(members)))
  return str(path)


def _run(module, *flags, timeout=600):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", module, *flags], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _sweep(config, workdir, *flags):
  return _run("experiments.sweep", f"--config={config}", f"--workdir={workdir}", *flags)


def test_member_names_are_readable_stable_and_distinct():
  assert sweeps.member_name({"seed": 1, "objective.beta": 0.25}) == "objective.beta=0.25,seed=1"
  assert sweeps.member_name({"objective.beta": 0.25, "seed": 1}) == "objective.beta=0.25,seed=1"
  assert sweeps.member_name({"objective.beta": 1}) != sweeps.member_name({"objective.beta": 1.5})
  assert sweeps.member_name({"model.encoder": "conv"}) == "model.encoder=conv"
  assert "/" not in sweeps.member_name({"data.data_dir": "/a/b"})


def test_repository_sweeps_are_the_documented_grids():
  from configs import beta, latent_dim  # pylint: disable=g-import-not-at-top
  config = beta.get_config()
  betas = sweeps.load_members("configs/beta.py", config)
  dims = sweeps.load_members("configs/latent_dim.py", config)
  assert {m.overrides["objective.beta"] for m in betas} == {0.1, 0.25, 0.5, 1, 2, 4, 8}
  assert {m.overrides["model.latent_dim"] for m in dims} == {2, 5, 10, 20, 50, 100}
  assert len(betas) == 7 * len(beta.SEEDS) and len(dims) == 6 * len(latent_dim.SEEDS)
  assert latent_dim.get_config().objective.beta == 1.0


@pytest.mark.slow
def test_a_sweep_runs_every_member_then_a_rerun_skips_them(tmp_path):
  members = [{"objective.beta": b, "model.latent_dim": d} for b in (0.5, 2.0) for d in (2, 4)]
  config = _config_file(tmp_path, members)
  workdir = tmp_path / "sweep"
  proc = _sweep(config, workdir, "--parallel=2", "--config.model.width=16")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Sweep: 4 done" in proc.stdout
  names = [sweeps.member_name(m) for m in members]
  for name, overrides in zip(names, members):
    results = json.loads((workdir / name / "results.json").read_text())
    recorded = json.loads((workdir / name / "config.json").read_text())
    assert recorded["objective"]["beta"] == overrides["objective.beta"]
    assert recorded["model"]["latent_dim"] == overrides["model.latent_dim"]
    assert recorded["model"]["width"] == 16  # the extra override reached every member
    assert results["steps"] == 20 and (workdir / name / "log.txt").exists()
  manifest = json.loads((workdir / "sweep.json").read_text())
  assert [m["name"] for m in manifest["members"]] == names
  assert manifest["extra_overrides"] == ["--config.model.width=16"]

  # One command from the sweep to the ablation table (one row per setting) and plots.
  made = _run("experiments.tables", f"--workdir={workdir}")
  assert made.returncode == 0, made.stderr[-3000:]
  with open(workdir / "tables" / "ablation.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4
  assert {(float(r["objective.beta"]), int(r["model.latent_dim"])) for r in rows} == {
      (m["objective.beta"], m["model.latent_dim"]) for m in members}
  for row in rows:
    name = sweeps.member_name({"objective.beta": float(row["objective.beta"]),
                               "model.latent_dim": int(row["model.latent_dim"])})
    neg_elbo = json.loads((workdir / name / "results.json").read_text())["test"]["neg_elbo"]
    assert float(row["neg_elbo_mean"]) == pytest.approx(neg_elbo)
  for table in ("ablation.md", "ablation.tex"):
    assert (workdir / "tables" / table).stat().st_size > 0
  for plot in ("rate_distortion.png", "active_units_vs_beta.png", "nll_vs_latent_dim.png",
               "active_units_vs_latent_dim.png"):
    assert (workdir / "plots" / plot).stat().st_size > 0

  rerun = _sweep(config, workdir, "--parallel=2", "--config.model.width=16")
  assert rerun.returncode == 0 and "Sweep: 4 skipped" in rerun.stdout
  # Another protocol in the same directory is refused rather than mixed in.
  other = _sweep(config, workdir, "--config.model.width=8")
  assert other.returncode == 1 and "one directory, one protocol" in other.stderr


@pytest.mark.slow
def test_member_k_runs_alone_and_failures_are_reported(tmp_path):
  # The second passes validation but cannot run: a batch larger than the 1,497 digits.
  members = [{"objective.beta": 1.0}, {"batch_size": 4000}]
  config = _config_file(tmp_path, members)
  workdir = tmp_path / "sweep"
  single = _sweep(config, workdir, "--member=0")
  assert single.returncode == 0, single.stderr[-3000:]
  assert sorted(p.name for p in workdir.iterdir() if p.is_dir()) == ["objective.beta=1.0"]
  assert (workdir / "objective.beta=1.0" / "results.json").exists()
  # --member=K that fails records failure.json as the driver does (issue 29).
  alone = _sweep(config, workdir, "--member=1")
  assert alone.returncode == 1, alone.stderr[-3000:]
  failure = json.loads((workdir / "batch_size=4000" / "failure.json").read_text())
  assert failure["returncode"] == 1 and failure["log"] == str(workdir / "sweep.log")
  assert "config.batch_size=4000 exceeds the 1347 training examples" in failure["tail"]

  proc = _sweep(config, workdir)
  assert proc.returncode == 1
  assert "Sweep: 1 skipped, 1 failed" in proc.stdout
  assert "failed: batch_size=4000" in proc.stdout
  failure = json.loads((workdir / "batch_size=4000" / "failure.json").read_text())
  assert failure["returncode"] == 1
  # digits: 1,497 training images less the validation hold-out (a tenth)
  assert "config.batch_size=4000 exceeds the 1347 training examples" in failure["tail"]
  made = _run("experiments.tables", f"--workdir={workdir}")
  assert made.returncode == 0
  assert "1 done, 1 failed, 0 missing" in made.stdout
  assert "4000" in (workdir / "tables" / "ablation.md").read_text()
  listing = _sweep(config, workdir, "--dry_run")
  assert "done     objective.beta=1.0" in listing.stdout
  assert "failed   batch_size=4000" in listing.stdout


@pytest.mark.slow
@pytest.mark.parametrize("members, message", [
    ([{"objective.bta": 1.0}], "sets unknown field 'objective.bta'"),
    ([{"seed": 1}, {"seed": 1}], "are the same run"),
])
def test_bad_sweeps_fail_before_running_anything(tmp_path, members, message):
  config = _config_file(tmp_path, members)
  proc = _sweep(config, tmp_path / "sweep", "--dry_run")
  assert proc.returncode == 1 and message in proc.stderr
  assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_the_driver_leaves_tensorflow_to_the_members():
  """Listing and launching members needs no TensorFlow (4.5 s to import); --member=K does."""
  code = ("import sys; sys.argv = ['sweep']; import experiments.sweep; "
          "print(sorted({'tensorflow', 'vae_jax.training.loop'} & set(sys.modules)))")
  proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_dry_run_refuses_what_the_real_run_refuses_before_making_anything(tmp_path):
  members = [{"objective.beta": 1.0}, {"objective.beta": 2.0}]
  config = _config_file(tmp_path, members)
  workdir = tmp_path / "sweep"
  member = _sweep(config, workdir, "--member=0", "--config.batch_size=0")
  line = [l for l in member.stderr.splitlines() if l.startswith("FATAL")]
  assert member.returncode == 1 and line and "config.batch_size=0 is invalid" in line[0]
  for flags in (["--dry_run"], []):
    proc = _sweep(config, workdir, *flags, "--config.batch_size=0")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert line[0] in proc.stderr  # the member's own line, naming the member
    assert not workdir.exists()  # no sweep directory, no empty member directories
    clash = _sweep(config, workdir, *flags, "--config.objective.beta=3.0")
    assert clash.returncode == 1 and "swept by the members" in clash.stderr
    assert "experiments.sweep" not in clash.stdout and not workdir.exists()


@pytest.mark.slow
def test_a_stopped_sweep_stops_its_members_cleanly_and_the_rerun_completes(tmp_path):
  """SIGTERM to the driver: one SIGTERM to each member, which saves and exits 0; the
  members are stopped, not failed, and the rerun resumes them."""
  members = [{"objective.beta": 1.0}, {"objective.beta": 2.0}]
  config = _config_file(tmp_path, members)
  workdir = tmp_path / "sweep"
  slow_end = ["--config.eval.num_importance_samples=3000", "--parallel=2"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  driver = subprocess.Popen([sys.executable, "-m", "experiments.sweep", f"--config={config}",
                             f"--workdir={workdir}", *slow_end], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  logs = [workdir / sweeps.member_name(m) / sweeps.LOG_FILE for m in members]
  deadline = time.time() + 300
  # Checkpoint 20 saved: the members are in their final evaluation (a stop during the
  # validation before it would drop that step, which the rerun redoes).
  while not all((p.parent / "checkpoints" / "20").is_dir() for p in logs):
    assert driver.poll() is None and time.time() < deadline, driver.communicate()
    time.sleep(0.1)
  driver.send_signal(signal.SIGTERM)  # the members are in their final evaluation
  stdout, stderr = driver.communicate(timeout=240)
  assert driver.returncode == 0, stderr[-3000:]
  assert "Sweep: 2 stopped" in stdout and "stopped: objective.beta=1.0" in stdout, stdout
  for log, member in zip(logs, members):
    directory = log.parent
    assert not (directory / sweeps.FAILURE_FILE).exists()
    assert (directory / "checkpoints" / "20").is_dir()
    assert "Stopped by SIGTERM" in log.read_text() and "Traceback" not in log.read_text()
    assert sweeps.status(str(workdir), sweeps.Member(0, directory.name, member)) == "started"
  rerun = _sweep(config, workdir, *slow_end)
  assert rerun.returncode == 0 and "Sweep: 2 done" in rerun.stdout, rerun.stderr[-3000:]
