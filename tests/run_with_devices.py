"""Runs train_and_evaluate on N fake CPU devices: python tests/run_with_devices.py N WORKDIR JSON.

XLA_FLAGS must be set before JAX starts, so multi-device tests run this file in
a subprocess. JSON holds config overrides as {"a.b": value}. With the
VAE_JAX_* variables of ``vae_jax.distributed`` set, the process joins a
multi-process job first (tests/training/test_multihost.py), as the entry points do. With
RUN_CONFIG=FILE[:ARG] the overrides apply to that config file instead of the default. With
RECORD_WRITES=1 it prints, as its last line, ``WRITES: [...]``: the files it
opened for writing (or created, renamed) in WORKDIR outside checkpoints/. With
SIGTERM_AFTER_STEP=N it sends itself SIGTERM once the train loop has passed
step N (a preemption notice) and, like experiments.train, exits 0 when the run
stops for it, printing ``PREEMPTED AT STEP``. With KILL_AT_STEP=N it kills itself
(SIGKILL) once the train loop has passed step N. With POPULATION=JSON (a list of
override dicts, one per member) the members train as one population
(``train_population``, split as POPULATION_SPLIT says), member i in WORKDIR/mI. In a multi-process job the signal
reaches jax's preemption notifier asynchronously (it polls for SIGTERM about once
a second), so the sender then waits a few seconds, holding every host at the next
collective, for the notice to arrive before the run could end without it.
"""

import json
import os
import signal
import sys
import time

NOTICE_SECONDS = 5.0  # > jax's 1 s SIGTERM poll plus the hosts' agreement, on a loaded CI


def _record_writes(workdir):
  """Records this process's own file writes in workdir (Python-level: open, rename, mkdir)."""
  root, seen = os.path.abspath(workdir) + os.sep, set()
  writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

  def note(path):
    if isinstance(path, bytes):
      path = os.fsdecode(path)
    if isinstance(path, (str, os.PathLike)):
      path = os.path.abspath(os.fspath(path))
      if path.startswith(root) and not path[len(root):].startswith("checkpoints"):
        seen.add(path[len(root):])

  def hook(event, args):
    if event == "open":
      path, mode, flags = args
      if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
          isinstance(flags, int) and flags & writing):
        note(path)
    elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove"):
      note(args[0])
      if event in ("os.rename", "os.replace"):
        note(args[1])

  sys.addaudithook(hook)
  return seen


def _sigterm_after(step):
  """SIGTERM to this process right after the first preemption check at or past ``step``."""
  import jax  # pylint: disable=g-import-not-at-top
  from vae_jax.training import preemption  # pylint: disable=g-import-not-at-top
  original, sent = preemption.PreemptionWatcher.should_stop, []

  def should_stop(self, at):
    answer = original(self, at)
    if at >= step and not sent:
      sent.append(at)
      os.kill(os.getpid(), signal.SIGTERM)
      if jax.process_count() > 1:
        time.sleep(NOTICE_SECONDS)
    return answer

  preemption.PreemptionWatcher.should_stop = should_stop


def _sigkill_at(step):
  """SIGKILL to this process at the first preemption check at or past ``step``."""
  from vae_jax.training import preemption  # pylint: disable=g-import-not-at-top
  original = preemption.PreemptionWatcher.should_stop

  def should_stop(self, at):
    if at >= step:
      os.kill(os.getpid(), signal.SIGKILL)
    return original(self, at)

  preemption.PreemptionWatcher.should_stop = should_stop


def main():
  num_devices, workdir, overrides = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vae_jax import parallel  # pylint: disable=g-import-not-at-top
  parallel.initialize()  # a no-op unless VAE_JAX_* describe a job
  writes = _record_writes(workdir) if os.environ.get("RECORD_WRITES") == "1" else None
  from configs import default  # pylint: disable=g-import-not-at-top
  from tests import conftest  # pylint: disable=g-import-not-at-top
  from vae_jax.training import preemption  # pylint: disable=g-import-not-at-top
  from vae_jax.training import loop as train  # pylint: disable=g-import-not-at-top
  from vae_jax import validation  # pylint: disable=g-import-not-at-top
  assert jax.local_device_count() == num_devices, jax.devices()
  if os.environ.get("SIGTERM_AFTER_STEP"):
    _sigterm_after(int(os.environ["SIGTERM_AFTER_STEP"]))
  if os.environ.get("KILL_AT_STEP"):
    _sigkill_at(int(os.environ["KILL_AT_STEP"]))
  base = (validation.load_config_file(os.environ["RUN_CONFIG"]) if os.environ.get("RUN_CONFIG")
          else default.get_config())  # RUN_CONFIG=FILE[:ARG]: another config file
  config = conftest.set_fields(base, overrides)
  try:
    if os.environ.get("POPULATION"):
      members = json.loads(os.environ["POPULATION"])
      configs = [conftest.set_fields(ml_collections.ConfigDict(config.to_dict()), m)
                 for m in members]
      outcomes = train.train_population(
          configs, [os.path.join(workdir, f"m{i}") for i in range(len(members))],
          split=os.environ.get("POPULATION_SPLIT", "auto"))
      assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    else:
      train.train_and_evaluate(config, workdir)
  except preemption.Preempted as e:
    print(f"PREEMPTED AT {e.step}", flush=True)
  if writes is not None:
    print("WRITES: " + json.dumps(sorted(writes)), flush=True)


if __name__ == "__main__":
  main()
