"""The command line as a user meets it: signals at every stage, and one line per error.

Every case runs the real main in a subprocess. A read-only directory or an unreadable
checkpoint must be met as a user without root's powers: the tests run as root, so
the subprocess drops the capabilities that let root ignore file permissions
(``setpriv --bounding-set=-dac_override,-dac_read_search``); the kernel then enforces
the permission bits on it as on any user (EACCES). A full disk is a small tmpfs.
"""

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

TINY = {"data.name": "digits", "batch_size": 64, "num_train_steps": 20,
        "steps_per_dispatch": 10, "log_every": 10, "eval_every": 1000,
        "checkpoint_every": 1000, "eval.batch_size": 100, "model.width": 32,
        "eval.num_importance_samples": 3000, "eval.num_importance_samples_during_training": 0,
        "images.num_reconstructions": 8, "images.num_samples": 8}
ALLOW = "--allow_config_changes=num_train_steps,steps_per_dispatch,log_every,eval"
# One evaluation batch of 300 digits at this k is one long device call: minutes on a 2-core
# CPU (100 digits at k = 3,000 take a third of a second), so a process that waits for the
# batch's end answers minutes late, and still over half a minute on a machine ten times
# faster.
SLOW = {"eval.batch_size": 300}
SLOW_K = 2_000_000
NO_ROOT_POWERS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]


def _flags(fields):
  return [f"--config.{k}={v}" for k, v in fields.items()]


def _command(module, *flags, prefix=()):
  return [*prefix, sys.executable, "-m", module, *flags]


def _env():
  return dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")


def _run(module, *flags, prefix=(), timeout=300):
  return subprocess.run(_command(module, *flags, prefix=prefix), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def _run_all(commands):
  """[(module, flags, prefix)] -> their CompletedProcesses, three at a time (each mostly
  imports and refuses: start-up time, which overlaps well)."""
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    return list(pool.map(lambda c: _run(c[0], *c[1], prefix=c[2]), commands))


_STARTED = []  # every _Background process: none outlives its test (SLOW_K runs for minutes)


@pytest.fixture(autouse=True)
def _no_process_left_running():
  yield
  while _STARTED:
    proc = _STARTED.pop()
    if proc.poll() is None:
      proc.kill()
      proc.wait()


class _Background:
  """A main in a subprocess, its stderr in a file we can wait on."""

  def __init__(self, tmp_path, name, module, *flags):
    self.path = tmp_path / f"{name}.stderr"
    self._file = open(self.path, "w", encoding="utf-8")  # pylint: disable=consider-using-with
    self.proc = subprocess.Popen(_command(module, *flags), cwd=REPO, env=_env(),
                                 stdout=subprocess.DEVNULL, stderr=self._file)
    _STARTED.append(self.proc)

  def wait_for(self, pattern, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
      if re.search(pattern, self.path.read_text()):
        return
      assert self.proc.poll() is None, f"ended before {pattern!r}:\n{self.path.read_text()}"
      time.sleep(0.05)
    pytest.fail(f"no {pattern!r} within {timeout}s:\n{self.path.read_text()[-3000:]}")

  def finish(self, timeout=240):
    code = self.proc.wait(timeout=timeout)
    self._file.close()
    return code, self.path.read_text()


def _seconds_to(run, signum, pattern):
  """Sends the signal; the seconds until the process says ``pattern``."""
  start = time.time()
  run.proc.send_signal(signum)
  run.wait_for(pattern)
  return time.time() - start


def _stopped_cleanly(code, stderr, by):
  assert code == 0, stderr[-3000:]
  assert "Traceback" not in stderr and "Fatal Python error" not in stderr, stderr[-3000:]
  assert f"Stopped by {by}" in stderr, stderr[-3000:]


def _fatal(proc, *fragments):
  """Exit 1 with one FATAL line holding every fragment, and no traceback on the terminal."""
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("FATAL")]
  assert len(lines) == 1, proc.stderr[-3000:]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]
  return lines[0]


@pytest.mark.slow
def test_signals_at_every_stage_stop_cleanly_and_the_rerun_finishes(tmp_path):
  """SIGTERM and SIGINT at start-up, mid-training, in the final k=3000 evaluation (the
  issue's reproduction: one second after the last training step), in evaluate and pictures."""
  workdir = str(tmp_path / "run")
  train = ["experiments.train", f"--workdir={workdir}"]
  # Inside a long device call (a validation evaluation at k = SLOW_K of a state not yet
  # saved): Ctrl-C is acknowledged at once, and the run drops the validation with the steps
  # since the last checkpoint (none yet), so it ends at once whatever k.
  slow_validation = dict(TINY, eval_every=10,
                         **SLOW, **{"eval.num_importance_samples_during_training": SLOW_K})
  run = _Background(tmp_path, "validation", "experiments.train",
                    f"--workdir={tmp_path}/validation", *_flags(slow_validation))
  run.wait_for(r"step 10/20")
  time.sleep(2.0)  # the evaluation compiles (a signal is heard then too), then runs
  start = time.time()
  assert _seconds_to(run, signal.SIGINT, "SIGINT received") < 5
  code, stderr = run.finish()
  assert time.time() - start < 10, stderr[-3000:]
  _stopped_cleanly(code, stderr, "SIGINT")
  assert "at step 10; no checkpoint was saved yet" in stderr, stderr[-3000:]

  # Start-up (during the imports): a stop before training, nothing lost; a second Ctrl-C
  # before the first safe point aborts at once, saying so.
  run = _Background(tmp_path, "startup", *train, *_flags(TINY))
  time.sleep(1.0)
  run.proc.send_signal(signal.SIGTERM)
  _stopped_cleanly(*run.finish(), "SIGTERM")
  run = _Background(tmp_path, "twice", *train, *_flags(TINY))
  time.sleep(1.0)
  assert _seconds_to(run, signal.SIGINT, "SIGINT received") < 5
  run.proc.send_signal(signal.SIGINT)
  code, stderr = run.finish()
  assert code == 130 and "Second Ctrl-C: aborting at once" in stderr and "Traceback" not in stderr
  checkpoints = os.path.join(workdir, "checkpoints")
  assert not os.path.isdir(checkpoints) or not os.listdir(checkpoints), stderr[-3000:]

  # Mid-training, Ctrl-C: saved at the next dispatch.
  long = dict(TINY, num_train_steps=100_000, steps_per_dispatch=1, log_every=1)
  run = _Background(tmp_path, "training", *train, *_flags(long), ALLOW)
  run.wait_for(r"step 5/100000")
  run.proc.send_signal(signal.SIGINT)
  code, stderr = run.finish()
  _stopped_cleanly(code, stderr, "SIGINT")
  saved = int(re.search(r"checkpoint (\d+) is saved", stderr).group(1))
  assert saved >= 5 and os.path.isdir(os.path.join(workdir, "checkpoints", str(saved)))

  # The final evaluation, of a saved state, inside its first batch at k = SLOW_K: the
  # signal is answered at once, and the process saves and exits without waiting for
  # the batch (issue 29: a preemption notice gives about 30 s).
  final = dict(TINY, num_train_steps=saved + 10)
  run = _Background(tmp_path, "evaluation", *train, ALLOW,
                    *_flags(dict(final, **SLOW, **{"eval.num_importance_samples": SLOW_K})))
  run.wait_for(rf"step {saved + 10} validation")  # then the test split's: compiled, run
  time.sleep(2.0)
  start = time.time()
  assert _seconds_to(run, signal.SIGTERM, "SIGTERM received") < 5
  code, stderr = run.finish()
  assert time.time() - start < 30, stderr[-3000:]  # at most a compilation and a save
  _stopped_cleanly(code, stderr, "SIGTERM")
  assert f"checkpoint {saved + 10} is saved" in stderr
  assert not os.path.exists(os.path.join(workdir, "results.json"))

  # The same command resumes and finishes.
  proc = _run(*train, *_flags(final), ALLOW)
  assert proc.returncode == 0, proc.stderr[-3000:]
  results = json.load(open(os.path.join(workdir, "results.json"), encoding="utf-8"))
  assert results["steps"] == saved + 10 and results["test"]["num_importance_samples"] == 3000

  # Read-only commands: stop, write nothing, exit 0.
  run = _Background(tmp_path, "evaluate", "experiments.evaluate", f"--workdir={workdir}",
                    f"--num_importance_samples={SLOW_K}")
  run.wait_for("Restoring checkpoint")
  time.sleep(1.0)
  run.proc.send_signal(signal.SIGINT)
  _stopped_cleanly(*run.finish(), "SIGINT")
  assert not os.path.exists(os.path.join(workdir, "eval"))
  run = _Background(tmp_path, "pictures", "experiments.pictures", f"--workdir={workdir}")
  run.wait_for("Restoring checkpoint")
  run.proc.send_signal(signal.SIGTERM)
  _stopped_cleanly(*run.finish(), "SIGTERM")
  assert not os.path.exists(os.path.join(workdir, "pictures"))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  """A finished tiny run, copied by each test that changes it."""
  workdir = str(tmp_path_factory.mktemp("finished") / "run")
  proc = _run("experiments.train", f"--workdir={workdir}",
              *_flags(dict(TINY, **{"eval.num_importance_samples": 5})))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def _copy(finished_run, tmp_path, name="run"):
  target = str(tmp_path / name)
  shutil.copytree(finished_run, target)
  return target


def _snapshot(directory):
  out = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = open(path, "rb").read()
  return out


SMALL_FLAGS = _flags(dict(TINY, **{"eval.num_importance_samples": 5}))


@pytest.mark.slow
def test_a_refused_continuation_changes_nothing(finished_run, tmp_path):
  workdir = _copy(finished_run, tmp_path)
  os.remove(os.path.join(workdir, "train.log"))
  before = _snapshot(workdir)
  proc = _run("experiments.train", f"--workdir={workdir}",
              *_flags(dict(TINY, num_train_steps=10, **{"eval.num_importance_samples": 5})),
              "--allow_config_changes=num_train_steps")
  _fatal(proc, "checkpoint is at step 20, past the 10 steps", "num_train_steps >= 20",
         "nothing in")
  after = _snapshot(workdir)
  after.pop("train.log")  # the log file records the refusal
  after.pop(".lock", None)
  before.pop(".lock", None)
  assert after == before  # results.json not archived, config.json not rewritten


@pytest.mark.slow
def test_bad_paths_and_config_files_get_one_line(finished_run, tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  (tmp_path / "syntax.py").write_text("def get_config(:\n")
  damaged = _copy(finished_run, tmp_path, "damaged")
  with open(os.path.join(damaged, "config.json"), "r+", encoding="utf-8") as f:
    f.truncate(100)
  cases = [
      ([f"--workdir={a_file}"], ["is a file, not a directory"]),
      ([f"--workdir={a_file}/run"], [f"is under {a_file}, which is a file"]),
      (["--workdir=/tmp/x", "--config=configs/nosuch.py"],
       ["--config=configs/nosuch.py", "no such file", "configs/default.py"]),
      (["--workdir=/tmp/x", f"--config={tmp_path}/syntax.py"],
       ["line 1: invalid syntax"]),
      (["--workdir=/tmp/x", "--config=configs/beta.py:beta="], ["'' is not a valid float"]),
      (["--workdir=/tmp/x", "--config=configs/beta.py:nosuch=1"],
       ["unknown name 'nosuch'", "beta (float"]),
      ([f"--workdir={damaged}"], ["config.json is damaged (not valid JSON", "--overwrite"]),
  ]
  procs = _run_all([("experiments.train", [*flags, *SMALL_FLAGS], ()) for flags, _ in cases])
  for proc, (_, fragments) in zip(procs, cases):
    _fatal(proc, *fragments)
  assert not os.path.exists("/tmp/x")


@pytest.mark.slow
def test_values_that_would_train_to_garbage_are_refused(tmp_path):
  cases = [
      ({"objective.beta": "nan"}, "config.objective.beta=nan is invalid"),
      ({"objective.beta": "inf"}, "config.objective.beta=inf is invalid"),
      ({"data.name": "squares", "data.preprocessing": "dynamic"}, "is already binary"),
      ({"data.name": "binarized_mnist", "model.likelihood": "gaussian_learned"},
       "its pixels are already binary"),
      ({"data.name": "cifar10", "data.preprocessing": "binary"}, "is not binary"),
      ({"data.name": "cifar10", "data.preprocessing": "dequantize"},
       "a Bernoulli likelihood needs binary pixels"),
  ]
  workdir = tmp_path / "run"
  procs = _run_all([("experiments.train", [f"--workdir={workdir}", *SMALL_FLAGS,
                                           *_flags(fields)], ()) for fields, _ in cases])
  for proc, (_, fragment) in zip(procs, cases):
    _fatal(proc, fragment)
  assert not workdir.exists()  # refused before anything is made


def _without_root_powers():
  probe = subprocess.run([*NO_ROOT_POWERS, "true"], capture_output=True, check=False)
  if probe.returncode != 0:
    pytest.skip("setpriv cannot drop capabilities here")


@pytest.mark.slow
def test_permissions_get_one_line_for_a_user_without_root_powers(finished_run, tmp_path):
  _without_root_powers()
  readonly = tmp_path / "readonly"
  readonly.mkdir()
  existing = _copy(finished_run, readonly)
  unreadable = _copy(finished_run, tmp_path, "unreadable")
  for step in os.listdir(os.path.join(unreadable, "checkpoints")):
    os.chmod(os.path.join(unreadable, "checkpoints", step), 0)
  os.remove(os.path.join(unreadable, "results.json"))
  for root, dirs, files in os.walk(readonly):
    for name in dirs + files:
      os.chmod(os.path.join(root, name), 0o555 if name in dirs else 0o444)
  os.chmod(readonly, 0o555)
  try:
    cases = [
        ("experiments.train", [f"--workdir={readonly}/new"], "is not writable"),
        ("experiments.train", [f"--workdir={existing}"], "is not writable"),
        ("experiments.evaluate", [f"--workdir={existing}"], "the evaluation is written to eval/"),
        ("experiments.evaluate", [f"--workdir={unreadable}"], "cannot be read by this user"),
        ("experiments.train", [f"--workdir={unreadable}"], "cannot be read by this user"),
    ]
    procs = _run_all([(module, [*flags, *(SMALL_FLAGS if module == "experiments.train" else [])],
                       NO_ROOT_POWERS) for module, flags, _ in cases])
    for proc, (_, _, fragment) in zip(procs, cases):
      _fatal(proc, fragment)
  finally:
    for root, dirs, _ in os.walk(tmp_path):
      for name in dirs:
        os.chmod(os.path.join(root, name), 0o755)
    os.chmod(readonly, 0o755)


@pytest.mark.slow
def test_a_full_disk_is_one_line_on_the_terminal_and_everything_in_the_log(tmp_path):
  disk = tmp_path / "disk"
  disk.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)],
                    capture_output=True, check=False).returncode != 0:
    pytest.skip("cannot mount a small tmpfs here")
  try:
    (disk / "filler").write_bytes(b"\0" * 1_700_000)
    fields = dict(TINY, checkpoint_every=10, keep_checkpoints=10, num_train_steps=40,
                  **{"model.width": 64, "eval.num_importance_samples": 5})
    proc = _run("experiments.train", f"--workdir={disk}/run", *_flags(fields))
    # Whichever writer meets the full disk first says so: orbax saving a checkpoint, or
    # TensorBoard's summary writer flushing in clu's background thread.
    line = _fatal(proc, "MiB free on its disk", "rerun the same command")
    assert re.match(r"FATAL (CheckpointError: Writing a checkpoint .* Complete checkpoints are "
                    r"untouched|MetricsError: Writing metrics .* Checkpoints are not affected)",
                    line), line
    assert len(proc.stderr.splitlines()) < 20, proc.stderr  # orbax's noise: the log only
    # The log file holds what fit on the full disk: the writer's own error lines, at least.
    # The failure reads "No space left on device" or tensorstore's "RESOURCE_EXHAUSTED",
    # depending on which file met the full disk first.
    log = (disk / "run" / "train.log").read_text()
    assert "Traceback" in log, log[-3000:]
    assert re.search(r"No space left on device|RESOURCE_EXHAUSTED", log), log[-3000:]
  finally:
    subprocess.run(["umount", str(disk)], check=False)
