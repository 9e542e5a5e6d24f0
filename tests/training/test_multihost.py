"""Two processes on localhost, as two hosts of a pod slice would run (CPU, gloo collectives).

Each process feeds 2 fake CPU devices; together they must train like one process
with 4 devices (through a preemption and a resume), only process 0 may write the
workdir's files, and when process 0 cannot go on, every process stops.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_parallel import RUN, _final_state
from vae_jax import parallel
from vae_jax.training import workdir as workdir_lib

# RUN with pictures, and dispatches of 10 steps so that a preemption can stop the
# run midway (the chunk length does not change the numbers).
MULTIHOST_RUN = {**RUN, "images.num_reconstructions": 16, "images.num_samples": 16,
                 "steps_per_dispatch": 10, "log_every": 10}


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(num_devices, workdir, env):
  env = {**os.environ, **env, "RECORD_WRITES": "1"}
  for name in ("VAE_JAX_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS"):
    env.pop(name, None)
  return subprocess.Popen(
      [sys.executable, os.path.join(REPO, "tests", "run_with_devices.py"), str(num_devices),
       str(workdir), json.dumps(MULTIHOST_RUN)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)


def _finish(procs, timeout=300):
  """(returncode, stdout, stderr) of each; kills all if one hangs (a lost peer would)."""
  out = []
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=timeout)
      out.append((p.returncode, stdout, stderr))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.communicate()
  return out


def _lines(stdout, prefix):
  return [s[len(prefix):] for s in stdout.splitlines() if s.startswith(prefix)]


def _writes(stdout):
  return set(json.loads(_lines(stdout, "WRITES: ")[-1]))


def _two_processes(workdir, **env):
  job = {"VAE_JAX_COORDINATOR_ADDRESS": f"localhost:{_free_port()}",
         "VAE_JAX_NUM_PROCESSES": "2"}
  return [_start(2, workdir, {**job, "VAE_JAX_PROCESS_ID": str(i), **env.get(f"p{i}", {})})
          for i in range(2)]


@pytest.mark.slow
def test_two_processes_preempted_and_resumed_train_like_one_with_as_many_devices(tmp_path):
  two, one = tmp_path / "two_hosts", tmp_path / "one_host"
  # A preemption notice reaches process 1 only, after step 10: jax's sync point
  # must stop both at the same later step, saved; rerunning both resumes the run.
  procs = _two_processes(two, p1={"SIGTERM_AFTER_STEP": "10"})
  procs.append(_start(4, one, {}))  # the same 4 devices in one process, uninterrupted
  first = _finish(procs)
  for rc, _, err in first:
    assert rc == 0, err[-3000:]
  stops = [_lines(out, "PREEMPTED AT ") for _, out, _ in first[:2]]
  print("both processes stopped at step", stops[0])
  assert stops[0] == stops[1] and stops[0][0] in ("20", "30"), stops
  assert sorted(os.listdir(two / "checkpoints")) == [stops[0][0]]
  second = _finish(_two_processes(two))
  for rc, out, err in second:
    assert rc == 0 and not _lines(out, "PREEMPTED AT "), err[-3000:]

  init, one_state = _final_state(one)
  _, two_state = _final_state(two)
  assert int(one_state.step) == int(two_state.step) == 40
  # The same global batches and keys; only the order of the gradient all-reduce
  # differs (gloo across processes vs XLA in one): float rounding, as in
  # test_parallel (observed max |diff| ~3e-8; parameters move by ~4e-2).
  diff = jax.tree.map(lambda a, b: np.max(np.abs(a - b)), one_state.params, two_state.params)
  moved = jax.tree.map(lambda a, b: np.max(np.abs(a - b)), one_state.params, init.params)
  print("max |params(2 processes x 2) - params(1 process x 4)| =", max(jax.tree.leaves(diff)))
  assert max(jax.tree.leaves(diff)) < 1e-5
  assert max(jax.tree.leaves(moved)) > 1e-2

  results = [json.load(open(d / "results.json")) for d in (one, two)]
  assert results[1]["device_count"] == 4 and results[1]["process_count"] == 2
  for key in ("elbo", "rate", "distortion", "nll", "mutual_information"):
    assert abs(results[0]["test"][key] - results[1]["test"][key]) < 1e-4
  assert results[0]["test"]["active_units"] == results[1]["test"]["active_units"]

  # Only process 0 wrote the run's files; the TensorBoard writer (TF, not seen by
  # the Python audit hook) made one events file per run, so only one process did.
  written = _writes(first[0][1]) | _writes(second[0][1])
  assert {".lock", "config.json", "metrics.jsonl", "results.json", "reconstructions.png",
          "samples.png"} <= written, written
  assert _writes(first[1][1]) == _writes(second[1][1]) == set()
  assert len([f for f in os.listdir(two) if f.startswith("events.out.tfevents")]) == 2
  assert sorted(os.listdir(two / "checkpoints")) == [stops[0][0], "40"]


@pytest.mark.slow
def test_when_process_0_refuses_the_workdir_every_process_stops(tmp_path):
  workdir = tmp_path / "busy"
  with workdir_lib.lock(str(workdir)):  # another run holds it: process 0 must refuse
    (rc0, _, err0), (rc1, _, err1) = _finish(_two_processes(workdir), timeout=120)
  assert rc0 != 0 and "is in use by another run" in err0, err0[-3000:]
  assert rc1 != 0 and "Process 0 could not use" in err1, err1[-3000:]


@pytest.fixture
def no_job_env(monkeypatch):
  for name in (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES,
               parallel.ENV_PROCESS_ID, parallel.ENV_MODE):
    monkeypatch.delenv(name, raising=False)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  return calls


def test_initialize_is_a_no_op_without_a_job(no_job_env, monkeypatch):
  parallel.initialize()
  assert no_job_env == []  # not on a Cloud TPU VM, no variables: nothing contacted
  monkeypatch.setenv(parallel.ENV_MODE, "off")
  parallel.initialize()
  assert no_job_env == []
  assert jax.process_count() == 1


def test_initialize_passes_the_variables(no_job_env, monkeypatch):
  monkeypatch.setenv(parallel.ENV_COORDINATOR, "10.0.0.2:8476")
  monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, "4")
  monkeypatch.setenv(parallel.ENV_PROCESS_ID, "3")
  parallel.initialize()
  assert no_job_env == [((), {"coordinator_address": "10.0.0.2:8476", "num_processes": 4,
                              "process_id": 3})]


def test_initialize_auto_uses_jax_detection(no_job_env, monkeypatch):
  monkeypatch.setenv(parallel.ENV_MODE, "auto")
  parallel.initialize()
  assert no_job_env == [((), {})]


def test_partial_variables_are_a_clear_error(no_job_env, monkeypatch):
  monkeypatch.setenv(parallel.ENV_NUM_PROCESSES, "2")
  with pytest.raises(ValueError, match="VAE_JAX_COORDINATOR_ADDRESS, VAE_JAX_PROCESS_ID not"):
    parallel.initialize()
  monkeypatch.setenv(parallel.ENV_MODE, "sometimes")
  with pytest.raises(ValueError, match="VAE_JAX_DISTRIBUTED='sometimes' is invalid"):
    parallel.initialize()
  assert no_job_env == []
