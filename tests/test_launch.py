"""launch.sh: the usage text, and the gcloud calls of the TPU subcommands (a fake gcloud).

Nothing here needs gcloud, a TPU or a virtual environment: a fake ``gcloud`` on
PATH records its arguments, and the TPU subcommands must never run ``setup``.
"""

import os
import shlex
import subprocess
import tarfile

import pytest

from tests.conftest import REPO

# launch.sh runs in a bash subprocess: the full suite only.
pytestmark = pytest.mark.slow

SUBCOMMANDS = ("setup", "train", "sweep", "test", "tpu-create", "tpu-setup", "tpu-train",
               "tpu-sweep", "tpu-sweep-member", "tpu-fetch", "tpu-delete")
VARIABLES = ("TPU_NAME", "TPU_ZONE", "TPU_TYPE", "TPU_RUNTIME", "GCP_PROJECT", "TPU_REMOTE_DIR",
             "TPU_SPOT")
FAKE_GCLOUD = """#!/usr/bin/env bash
n=$(ls "$GCLOUD_CALLS" | wc -l)
printf '%s\\0' "$@" > "$GCLOUD_CALLS/$n"
if [[ $1 == compute && $4 == scp && -f $5 ]]; then cp "$5" "$GCLOUD_CALLS/archive-$n"; fi
"""


@pytest.fixture
def launch(tmp_path):
  """launch(*args, **env) -> (CompletedProcess, [gcloud argument lists])."""
  bin_dir, calls = tmp_path / "bin", tmp_path / "gcloud_calls"
  bin_dir.mkdir()
  calls.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  venv = tmp_path / "no_venv"

  def run(*args, **env):
    base = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    base.update(PATH=f"{bin_dir}:{os.environ['PATH']}", GCLOUD_CALLS=str(calls),
                VENV=str(venv), PYTHON="/bin/false")  # any setup would fail loudly
    base.update(env)
    proc = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), *args], cwd=tmp_path,
                          env=base, capture_output=True, text=True, timeout=60)
    assert not venv.exists() and "Setting up" not in proc.stderr
    made = sorted((f for f in os.listdir(calls) if f.isdigit()), key=int)
    return proc, [(calls / f).read_text().split("\0")[:-1] for f in made]

  return run


TPU = {"TPU_NAME": "vae-test", "TPU_ZONE": "us-central2-b", "GCP_PROJECT": "my-project"}
GCLOUD_FLAGS = ["--zone=us-central2-b", "--project=my-project"]


def _remote_args(tmp_path, command):
  """Runs a worker's --command against a fake checkout; returns python's argv and env."""
  fake_python = tmp_path / "remote" / ".venv" / "bin" / "python"
  fake_python.parent.mkdir(parents=True)
  fake_python.write_text('#!/usr/bin/env bash\necho "$VAE_JAX_DISTRIBUTED"\n'
                         'printf "%s\\n" "$@"\n')
  fake_python.chmod(0o755)
  out = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=True,
                       cwd=tmp_path)
  mode, *args = out.stdout.splitlines()
  return mode, args


def test_no_arguments_prints_every_subcommand_and_variable(launch):
  proc, calls = launch()
  assert proc.returncode == 2
  for word in SUBCOMMANDS + VARIABLES:
    assert word in proc.stderr, word
  assert calls == []


@pytest.mark.parametrize("missing", ["TPU_NAME", "TPU_ZONE", "TPU_TYPE"])
def test_tpu_create_without_a_required_variable_fails_fast_naming_it(launch, missing):
  env = {**TPU, "TPU_TYPE": "v4-32"}
  del env[missing]
  proc, calls = launch("tpu-create", **env)
  assert proc.returncode == 2
  assert f"set {missing}, e.g. export {missing}=" in proc.stderr
  assert calls == []


def test_tpu_create_builds_the_gcloud_call(launch):
  proc, calls = launch("tpu-create", "--labels=team=vae", **TPU, TPU_TYPE="v4-32", TPU_SPOT="1")
  assert proc.returncode == 0, proc.stderr
  assert calls == [["compute", "tpus", "tpu-vm", "create", "vae-test", *GCLOUD_FLAGS,
                    "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
                    "--labels=team=vae"]]
  proc, calls = launch("tpu-create", **TPU, TPU_TYPE="v5litepod-16", TPU_SPOT="0")
  assert calls[-1][-2:] == ["--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite"]
  proc, _ = launch("tpu-create", **TPU, TPU_TYPE="v99-8")
  assert proc.returncode == 2 and "set TPU_RUNTIME" in proc.stderr


def test_tpu_train_runs_on_every_worker_with_the_flags_quoted(launch, tmp_path):
  odd = "--config.data.manual_dir=/data/my dir's $HOME `x`"
  proc, calls = launch("tpu-train", "configs/default.py", "--config.seed=1", odd, **TPU,
                       TPU_REMOTE_DIR=str(tmp_path / "remote"))
  assert proc.returncode == 0, proc.stderr
  [call] = calls
  assert call[:5] == ["compute", "tpus", "tpu-vm", "ssh", "vae-test"]
  assert call[5:8] == [*GCLOUD_FLAGS, "--worker=all"]
  [command] = [a[len("--command="):] for a in call if a.startswith("--command=")]
  mode, args = _remote_args(tmp_path, command)
  assert mode == "auto"  # the workers join one job
  assert args[:5] == ["-m", "experiments.train", "--config=configs/default.py",
                      "--config.seed=1", odd]
  assert len(args) == 6 and args[5].startswith("--workdir=workdirs/default-")

  _, calls = launch("tpu-train", "configs/default.py", "--workdir=/mnt/runs/a", **TPU)
  command = calls[-1][-1][len("--command="):]
  assert shlex.split(command)[:2] == ["cd", "vae_jax"]  # the default TPU_REMOTE_DIR
  assert shlex.split(command)[-1] == "--workdir=/mnt/runs/a"


def test_tpu_sweep_member(launch, tmp_path):
  proc, calls = launch("tpu-sweep-member", "configs/beta.py", "3", "--workdir=sweeps/beta",
                       **TPU, TPU_REMOTE_DIR=str(tmp_path / "remote"))
  assert proc.returncode == 0, proc.stderr
  _, args = _remote_args(tmp_path, calls[0][-1][len("--command="):])
  assert args == ["-m", "experiments.sweep", "--config=configs/beta.py", "--member=3",
                  "--workdir=sweeps/beta"]
  proc, calls = launch("tpu-sweep-member", "configs/beta.py", "three", **TPU)
  assert proc.returncode == 2 and "usage" in proc.stderr and len(calls) == 1  # no new call


def test_tpu_sweep_runs_the_whole_sweep_as_populations_on_every_worker(launch, tmp_path):
  proc, calls = launch("tpu-sweep", "configs/beta.py", "--workdir=sweeps/beta",
                       "--population_size=21", **TPU, TPU_REMOTE_DIR=str(tmp_path / "remote"))
  assert proc.returncode == 0, proc.stderr
  assert "--worker=all" in calls[0]
  mode, args = _remote_args(tmp_path, calls[0][-1][len("--command="):])
  assert mode == "auto"  # the workers join one job
  assert args == ["-m", "experiments.sweep", "--config=configs/beta.py", "--in_process",
                  "--workdir=sweeps/beta", "--population_size=21"]
  proc, calls = launch("tpu-sweep", **TPU)
  assert proc.returncode == 2 and "usage" in proc.stderr and len(calls) == 1  # no new call


def test_tpu_setup_fetch_delete(launch, tmp_path):
  proc, calls = launch("tpu-setup", **TPU)
  assert proc.returncode == 0, proc.stderr
  scp, ssh = calls
  assert scp[:4] == ["compute", "tpus", "tpu-vm", "scp"]
  assert scp[5:] == ["vae-test:vae_jax_src.tar.gz", *GCLOUD_FLAGS, "--worker=all"]
  with tarfile.open(tmp_path / "gcloud_calls" / "archive-0") as archive:
    names = archive.getnames()
  assert "launch.sh" in names and "vae_jax/parallel.py" in names
  assert not any(n.startswith((".venv", "workdirs/", ".git/")) for n in names)
  assert not os.path.exists(scp[4])  # the local archive is removed
  assert ssh[3:5] == ["ssh", "vae-test"] and "--worker=all" in ssh
  command = ssh[-1]
  assert "PYTHON=python3.11 bash launch.sh setup" in command
  assert "jax\\[tpu\\]==0.10.2" in command

  proc, calls = launch("tpu-fetch", "workdirs/run1", str(tmp_path / "back"), **TPU)
  assert proc.returncode == 0, proc.stderr
  assert calls[-1] == ["compute", "tpus", "tpu-vm", "scp", "--recurse",
                       "vae-test:vae_jax/workdirs/run1", str(tmp_path / "back"),
                       *GCLOUD_FLAGS, "--worker=0"]
  proc, calls = launch("tpu-delete", **TPU)
  assert calls[-1] == ["compute", "tpus", "tpu-vm", "delete", "vae-test", *GCLOUD_FLAGS]


@pytest.mark.parametrize("env, expected", [
    ({}, "{home}/.cache/vae_jax/jax_compilation_cache"),
    ({"XDG_CACHE_HOME": "{tmp}/xdg"}, "{tmp}/xdg/vae_jax/jax_compilation_cache"),
    ({"JAX_COMPILATION_CACHE_DIR": "{tmp}/mine"}, "{tmp}/mine"),
    ({"VAE_JAX_COMPILATION_CACHE": "off", "JAX_COMPILATION_CACHE_DIR": "{tmp}/mine"}, ""),
])
def test_train_and_sweep_use_a_private_compilation_cache(tmp_path, env, expected):
  """launch.sh train/sweep export JAX's cache dir (created, mode 700) unless turned off."""
  venv = tmp_path / "venv"
  (venv / "bin").mkdir(parents=True)
  fake = venv / "bin" / "python"
  fake.write_text('#!/usr/bin/env bash\necho "cache=${JAX_COMPILATION_CACHE_DIR:-}"\n')
  fake.chmod(0o755)
  (venv / ".installed").touch()  # newer than requirements.txt: no setup
  home = tmp_path / "home"
  fill = lambda s: s.format(home=home, tmp=tmp_path)
  base = {k: v for k, v in os.environ.items()
          if k not in ("JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME")}
  base.update(HOME=str(home), VENV=str(venv), **{k: fill(v) for k, v in env.items()})
  for command in (["train", "configs/default.py", "--workdir=/tmp/x"],
                  ["sweep", "configs/beta.py", "--dry_run"]):
    proc = subprocess.run(["bash", os.path.join(REPO, "launch.sh"), *command], cwd=tmp_path,
                          env=base, capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == f"cache={fill(expected)}"
    if expected:
      assert os.stat(fill(expected)).st_mode & 0o777 == 0o700


def test_test_is_the_whole_suite_and_test_fast_leaves_out_the_slow_tests(launch, tmp_path,
                                                                         monkeypatch):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)  # as a user's shell
  monkeypatch.delenv("VAE_JAX_TEST_WORKERS", raising=False)
  venv = tmp_path / "fake_venv"  # set up already: python only prints its cache and arguments
  (venv / "bin").mkdir(parents=True)
  (venv / "bin" / "python").write_text(
      '#!/usr/bin/env bash\nprintf "%s\\n" "${JAX_COMPILATION_CACHE_DIR:-none}" "$@"\n')
  (venv / "bin" / "python").chmod(0o755)
  (venv / ".installed").touch()
  # One worker a core, at most 4, a test file to a worker.
  workers = ["-n", str(min(len(os.sched_getaffinity(0)), 4)), "--dist", "loadfile"]
  proc, _ = launch("test", "-x", VENV=str(venv))
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == ["none", "-m", "pytest", "-q", "tests", "studies", *workers,
                                      "-x"]
  proc, _ = launch("test", "--fast", "-k", "elbo", VENV=str(venv),
                   XDG_CACHE_HOME=str(tmp_path / "cache"))
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines() == [str(tmp_path / "cache" / "vae_jax" / "xla_fast_tests"),
                                      "-m", "pytest", "-q", "tests", "studies", *workers,
                                      "-m", "not slow", "-k", "elbo"]
  proc, _ = launch("test", VENV=str(venv), VAE_JAX_TEST_WORKERS="0")  # all in one process
  assert proc.stdout.splitlines()[6:] == ["-n", "0", "--dist", "loadfile"]
  proc, _ = launch("test", VENV=str(venv), VAE_JAX_TEST_WORKERS="two")
  assert proc.returncode == 2 and proc.stdout == ""
  assert proc.stderr.strip() == ("launch.sh test: VAE_JAX_TEST_WORKERS=two: use a whole number "
                                 "(0: no workers)")
