"""What populations buy: aggregate training throughput by population size, and whole sweeps.

``measure_populations`` times the train chunk a population runs (``training.step``'s
data-parallel chunk, vmapped over members), after compilation, the sizes taking turns,
as the best of several repeats: M members of one config, their seeds and β different
(so β is a traced input, as in a β sweep). Its figure is the aggregate: M x batch x
steps / second. A population of one is the solo program.

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


class _PopulationProgram:
  """The train chunk of ``num_members`` members of ``config``, compiled and ready to time."""

  def __init__(self, config: ml_collections.ConfigDict, num_members: int, split: str,
               vectorized: bool):
    configs = []
    for i in range(num_members):
      member = ml_collections.ConfigDict(config.to_dict())
      member.seed, member.objective.beta = i, 1.0 + 0.25 * i
      configs.append(member)
    name = config.data.name
    num_train = benchmark.SPLIT_SIZES.get(name, benchmark.DEFAULT_SPLIT_SIZES)[0]
    model = models.build(config, datasets.info(name))
    tx = state_lib.make_optimizer(config.optim, 1_000_000)
    self.config, self.num_members, self.vectorized = config, num_members, vectorized
    self.split = population.choose_split(num_members, parallel.device_count(), split)
    spec = training.spec_from_config(config, num_train, validation.preprocessing_of(config),
                                     self.split)
    place = parallel.shard if self.split == "members" else parallel.replicate
    states = [jax.device_get(state_lib.create_train_state(c.seed, model, tx)) for c in configs]
    solo = num_members == 1
    self.chunk = training.DataParallelTrainChunk(
        model, tx, spec, num_members=None if solo else num_members,
        optimizer=lambda lr: state_lib.make_optimizer(config.optim, 1_000_000,
                                                      learning_rate=lr),
        vectorized=vectorized)
    self.data = parallel.replicate(benchmark.synthetic_split(name, num_train, config.seed))
    self.rstate = place(states[0] if solo else population.stack(states))
    self.rhyper = place(population.hyper_arrays(configs))
    self.step = 0
    start = time.perf_counter()
    self.dispatch(1)
    self.compile_seconds = time.perf_counter() - start

  def dispatch(self, steps: int) -> float:
    """Runs ``steps`` steps; returns the seconds they took."""
    start = time.perf_counter()
    self.rstate, metrics = self.chunk(self.rstate, self.rhyper, self.data, self.step, steps)
    jax.block_until_ready(metrics)
    self.step += steps
    return time.perf_counter() - start


def measure_populations(config: ml_collections.ConfigDict, sizes: Sequence[int],
                        splits: Sequence[str] = ("batch",),
                        vectorized: Sequence[bool] = (False, True), *, repeats: int = 3,
                        dispatch_seconds: float = 2.0) -> list[dict[str, Any]]:
  """Aggregate training examples/s of each population size of ``config``, for each way
  the members share the devices (``splits``) and run on each (looped or vmapped:
  ``population.over_members``).

  Every program is compiled first; then they take turns, dispatch by dispatch, and
  each keeps its best: a shared machine's load then falls on all of them alike.
  """
  programs = [_PopulationProgram(config, m, split, v) for m in sizes for split in splits
              for v in (vectorized if m > 1 else vectorized[:1])
              if split == "batch" or population.choose_split(m, parallel.device_count(),
                                                             "auto") == split]
  steps = {}
  for program in programs:
    one = min(program.dispatch(1) for _ in range(2))
    steps[program] = max(1, min(config.steps_per_dispatch, int(dispatch_seconds / one)))
    program.dispatch(steps[program])  # compiles this length
  best = {program: float("inf") for program in programs}
  for _ in range(repeats):
    for program in programs:
      best[program] = min(best[program], program.dispatch(steps[program]) / steps[program])
  rows = []
  for program in programs:
    examples = program.num_members * config.batch_size / best[program]
    rows.append({"kind": "population", "model": benchmark._describe_model(config),  # pylint: disable=protected-access
                 "members": program.num_members, "split": program.split,
                 "member_map": "vmap" if program.vectorized else "loop",
                 "devices": parallel.device_count(), "batch_size": config.batch_size,
                 "steps_per_dispatch": steps[program], "seconds_per_step": best[program],
                 "examples_per_s": examples,
                 "examples_per_s_per_member": examples / program.num_members,
                 "compile_seconds": program.compile_seconds, **benchmark.memory()})
  return rows


_FIRST_MEMBERS = """# The first {count} members of {path}'s sweep (experiments.benchmark --sweep_members).
import importlib.util
_spec = importlib.util.spec_from_file_location("swept", {path!r})
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
get_config = _module.get_config


def sweep():
  return _module.sweep()[:{count}]
"""


def measure_sweep(spec: str, overrides: Sequence[str], *, parallel_processes: int = 2,
                  population_sizes: Sequence[int] = (64,),
                  num_members: int = 0) -> list[dict[str, Any]]:
  """Wall time of sweep ``spec`` as one process per member, ``parallel_processes`` at a time,
  and as populations of each of ``population_sizes`` (as many at a time); ``num_members``
  > 0: only the sweep's first members."""
  rows, name = [], spec
  modes = {"process per member": ["--population_size=1", f"--parallel={parallel_processes}"]}
  for size in population_sizes:
    modes[f"populations of <= {size}"] = [f"--population_size={size}",
                                          f"--parallel={parallel_processes}"]
  for mode, flags in modes.items():
    with tempfile.TemporaryDirectory(prefix="vae_jax_sweep_bench_") as root:
      if num_members:
        spec = os.path.join(root, "first_members.py")
        with open(spec, "w", encoding="utf-8") as f:
          f.write(_FIRST_MEMBERS.format(count=num_members,
                                        path=os.path.abspath(os.path.join(REPO, name))))
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
    # Members of one population report the same training time: count it once per process.
    train = {}
    for r in results:
      train.setdefault(round(r["train_time_s"], 3), r["train_time_s"])
    train_s = sum(train.values()) / parallel_processes
    rows.append({"kind": "sweep", "sweep": name, "mode": mode, "flags": flags,
                 "overrides": list(overrides), "members": len(results), "wall_s": wall,
                 "train_s": train_s, "set_up_and_eval_s": wall - train_s,
                 "member_eval_s_sum": float(np.sum([r["wall_time_s"] - r["train_time_s"]
                                                    for r in results]))})
  for row in rows[1:]:
    row["speedup"] = rows[0]["wall_s"] / row["wall_s"]
  return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
  """The population and sweep rows as text tables."""
  lines = []
  pops = [r for r in rows if r["kind"] == "population"]
  if pops:
    base = next((r["examples_per_s"] for r in pops if r["members"] == 1), None)
    lines.append(f"{'members':>8} {'split':>8} {'map':>5} {'batch':>6} {'examples/s':>12} "
                 f"{'per member':>11} {'x one':>6} {'compile s':>10}")
    for r in pops:
      ratio = f"{r['examples_per_s'] / base:6.2f}" if base else "     -"
      lines.append(f"{r['members']:>8} {r['split']:>8} {r['member_map']:>5} {r['batch_size']:>6} "
                   f"{r['examples_per_s']:>12.0f} {r['examples_per_s_per_member']:>11.0f} "
                   f"{ratio} {r['compile_seconds']:>10.1f}")
  for r in [r for r in rows if r["kind"] == "sweep"]:
    lines.append(f"{r['sweep']} ({r['members']} members, {' '.join(r['overrides'])}) "
                 f"{r['mode']}: {r['wall_s']:.0f} s wall, train {r['train_s']:.0f} s, "
                 f"set-up + evaluation {r['set_up_and_eval_s']:.0f} s"
                 + (f", {r['speedup']:.2f}x faster" if "speedup" in r else ""))
  return "\n".join(lines)
