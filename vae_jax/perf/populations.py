"""What populations buy: aggregate training throughput by population size, and whole sweeps.

``measure_population`` times the train chunk a population runs (``training.step``'s
data-parallel chunk, vmapped over members), after compilation, as the best of several
repeats: M members of one config, their seeds and β different (so β is a traced input,
as in a β sweep). Its figure is the aggregate: M x batch x steps / second. A population
of one is the solo program.

``measure_sweep`` runs a sweep config end to end twice, in fresh directories, with
compilation included (each mode gets its own empty compilation cache): as populations
(``experiments.sweep``'s default) and as one process per member, ``parallel`` at a time
(what sweeps did before). Training and evaluation are reported apart from the members'
results.json (their ``train_time_s``; the rest of their wall time is set-up and the
final evaluation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from vae_jax import models
from vae_jax import parallel
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.perf import benchmark
from vae_jax.training import population
from vae_jax.training import state as state_lib
from vae_jax.training import step as training

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure_population(config: ml_collections.ConfigDict, num_members: int, *,
                       split: str = "batch", repeats: int = 3,
                       dispatch_seconds: float = 2.0) -> dict[str, Any]:
  """Aggregate training examples/s of ``num_members`` members of ``config`` in one program,
  the members sharing the devices as ``split`` says (``population.choose_split``)."""
  configs = []
  for i in range(num_members):
    member = ml_collections.ConfigDict(config.to_dict())
    member.seed, member.objective.beta = i, 1.0 + 0.25 * i
    configs.append(member)
  name = config.data.name
  num_train = benchmark.SPLIT_SIZES.get(name, benchmark.DEFAULT_SPLIT_SIZES)[0]
  model = models.build(config, datasets.info(name))
  tx = state_lib.make_optimizer(config.optim, 1_000_000)
  split = population.choose_split(num_members, parallel.device_count(), split)
  spec = training.spec_from_config(config, num_train, validation.preprocessing_of(config),
                                   split)
  place = parallel.shard if split == "members" else parallel.replicate
  states = [jax.device_get(state_lib.create_train_state(c.seed, model, tx)) for c in configs]
  solo = num_members == 1
  chunk = training.DataParallelTrainChunk(
      model, tx, spec, num_members=None if solo else num_members,
      optimizer=lambda lr: state_lib.make_optimizer(config.optim, 1_000_000, learning_rate=lr))
  data = parallel.replicate(benchmark.synthetic_split(name, num_train, config.seed))
  rstate = place(states[0] if solo else population.stack(states))
  rhyper = place(population.hyper_arrays(configs))
  done = [0]

  def dispatch(steps: int):
    nonlocal rstate
    rstate, metrics = chunk(rstate, rhyper, data, done[0], steps)
    done[0] += steps
    return metrics

  first = time.perf_counter()
  jax.block_until_ready(dispatch(1))
  compile_seconds = time.perf_counter() - first
  one = min(_timed(lambda: dispatch(1)) for _ in range(2))
  steps = max(1, min(config.steps_per_dispatch, int(dispatch_seconds / one)))
  jax.block_until_ready(dispatch(steps))  # compiles this length
  seconds = min(_timed(lambda: dispatch(steps)) for _ in range(repeats)) / steps
  examples = num_members * config.batch_size / seconds
  return {"kind": "population", "model": benchmark._describe_model(config),  # pylint: disable=protected-access
          "members": num_members, "split": split, "devices": parallel.device_count(),
          "batch_size": config.batch_size,
          "steps_per_dispatch": steps, "seconds_per_step": seconds,
          "examples_per_s": examples, "examples_per_s_per_member": examples / num_members,
          "compile_seconds": compile_seconds, **benchmark.memory()}


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def measure_sweep(spec: str, overrides: Sequence[str], *, parallel_processes: int = 2,
                  population_size: int = 64) -> list[dict[str, Any]]:
  """Wall time of sweep ``spec`` as populations and as one process per member."""
  rows = []
  modes = {"populations": [f"--population_size={population_size}"],
           "process per member": ["--population_size=1", f"--parallel={parallel_processes}"]}
  for mode, flags in modes.items():
    with tempfile.TemporaryDirectory(prefix="vae_jax_sweep_bench_") as root:
      env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(root, "xla_cache"),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", TF_CPP_MIN_LOG_LEVEL="2")
      workdir = os.path.join(root, "sweep")
      command = [sys.executable, "-m", "experiments.sweep", f"--config={spec}",
                 f"--workdir={workdir}", *flags, *[f"--config.{o}" for o in overrides]]
      start = time.perf_counter()
      proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            check=False)
      wall = time.perf_counter() - start
      if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stdout[-2000:]}"
                           f"{proc.stderr[-2000:]}")
      results = [json.load(open(os.path.join(workdir, d, "results.json"), encoding="utf-8"))
                 for d in sorted(os.listdir(workdir))
                 if os.path.exists(os.path.join(workdir, d, "results.json"))]
    concurrent = 1 if mode == "populations" else parallel_processes
    train = [r["train_time_s"] for r in results]
    rest = [r["wall_time_s"] - r["train_time_s"] for r in results]
    # A population's members train at once (each reports the same training time); separate
    # processes run ``concurrent`` at a time.
    train_s = max(train) if mode == "populations" else sum(train) / concurrent
    rows.append({"kind": "sweep", "sweep": spec, "mode": mode, "flags": flags,
                 "overrides": list(overrides), "members": len(results), "wall_s": wall,
                 "train_s": train_s, "set_up_and_eval_s": wall - train_s,
                 "member_eval_s_sum": float(np.sum(rest))})
  rows[0]["speedup"] = rows[1]["wall_s"] / rows[0]["wall_s"]
  return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
  """The population and sweep rows as text tables."""
  lines = []
  pops = [r for r in rows if r["kind"] == "population"]
  if pops:
    base = next((r["examples_per_s"] for r in pops if r["members"] == 1), None)
    lines.append(f"{'members':>8} {'split':>8} {'batch':>6} {'examples/s':>12} "
                 f"{'per member':>11} {'x one':>6} {'compile s':>10}")
    for r in pops:
      ratio = f"{r['examples_per_s'] / base:6.2f}" if base else "     -"
      lines.append(f"{r['members']:>8} {r['split']:>8} {r['batch_size']:>6} "
                   f"{r['examples_per_s']:>12.0f} {r['examples_per_s_per_member']:>11.0f} "
                   f"{ratio} {r['compile_seconds']:>10.1f}")
  for r in [r for r in rows if r["kind"] == "sweep"]:
    lines.append(f"{r['sweep']} ({r['members']} members, {' '.join(r['overrides'])}) "
                 f"{r['mode']}: {r['wall_s']:.0f} s wall, train {r['train_s']:.0f} s, "
                 f"set-up + evaluation {r['set_up_and_eval_s']:.0f} s"
                 + (f", {r['speedup']:.2f}x faster" if "speedup" in r else ""))
  return "\n".join(lines)
