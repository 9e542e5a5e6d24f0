r"""Speed against the device's own limit: python -m experiments.benchmark [--config=...].

Measures, after compilation and warm-up, training examples/s of --config (the
MLP VAE by default) and of --conv_config (the convolutional VAE) at each of
--batch_sizes, --conv_config with the --conv_baseline overrides (its convolutions
as nn.Conv and nn.ConvTranspose compute them) at the first batch size, and
IWAE evaluation examples/s with k=--num_importance_samples;
with each, the compile time, peak host (and device) memory and the roofline
ratio: the time the program's matrix products take alone on this device, over
the program's time. Next to each --config row, a plain hand-written JAX loop of
the same MLP VAE (--reference) and where the step's microseconds go, operation
by operation (--breakdown). With --key_impls, --config's train step (at each batch size)
and IWAE evaluation under each of those JAX key implementations (jax_default_prng_impl),
timed in turn in this run. Prints a table and writes the JSON to --output
(benchmarks/benchmark-PLATFORM-Nd-TIME.json by default; never overwritten).

  python -m experiments.benchmark
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python -m experiments.benchmark
  python -m experiments.benchmark --key_impls=threefry2x32,rbg,unsafe_rbg,philox4x32
"""

import copy
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from experiments import cli  # pylint: disable=g-import-not-at-top,wrong-import-position  # first: signals
import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags
from absl import logging

from vae_jax.perf import benchmark
from vae_jax.perf import key_impls
from vae_jax.perf import populations
from vae_jax.perf import reference as reference_loop
from vae_jax import parallel
from vae_jax import validation

_DEFAULT_CONFIG = "configs/default.py"
_CONFIG = validation.define_config_flag(_DEFAULT_CONFIG, "The model to measure.", lock_config=False)
_CONV = flags.DEFINE_string("conv_config", "configs/conv.py",
                            "A second model, trained only ('' to skip).")
_BATCHES = flags.DEFINE_list("batch_sizes", ["128", "1024"], "Global training batch sizes.")
_CONV_BASELINE = flags.DEFINE_list(
    "conv_baseline", ["model.conv_impl=lax"],
    "FIELD=VALUE overrides of --conv_config, trained beside it at the first batch size in "
    "the same run ('' to skip); by default nn.Conv and nn.ConvTranspose (XLA's convolutions), "
    "against the form model.conv_impl=auto picks.")
_SGD = flags.DEFINE_bool("sgd_baseline", True, "Also train --config with optim.optimizer=sgd at "
                         "the first batch size: the optimizer's share of a step.")
_REFERENCE = flags.DEFINE_bool("reference", True, "Also train a plain hand-written JAX loop of "
                               "--config's MLP VAE at each batch size (one device only).")
_BREAKDOWN = flags.DEFINE_bool("breakdown", True, "Profile --config's train steps (and the "
                               "reference's): where each step's microseconds go, by source.")
_KEY_IMPLS = flags.DEFINE_list(
    "key_impls", [], "Also train --config at each batch size, and evaluate it, under each of "
    f"these JAX key implementations ({', '.join(key_impls.KEY_IMPLS)}), in turn in this run, "
    "beside a second threefry2x32 program (the run's noise) and the hand-written loop; "
    "threefry2x32, today's, is always measured ('' to skip).")
_K = flags.DEFINE_integer("num_importance_samples", 5000, "IWAE k (0 skips evaluation).")
_EXAMPLES = flags.DEFINE_integer("eval_examples", 1000,
                                 "Test images evaluated (the cost is linear in them).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions; the best is reported.")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file to write (must not exist).")
_POPULATIONS = flags.DEFINE_list(
    "population_sizes", ["1", "4", "16", "64"], "Members of --config trained as one "
    "population at the first batch size: aggregate examples/s ('' to skip).")
_SWEEPS = flags.DEFINE_list(
    "sweeps", [], "Sweep configs to run end to end, as populations and as one process per "
    "member (--sweep_parallel at a time), compiles included, e.g. configs/beta.py.")
_SWEEP_OVERRIDES = flags.DEFINE_list(
    "sweep_overrides", [], "FIELD=VALUE overrides of every --sweeps member, e.g. "
    "num_epochs=1,eval.num_importance_samples=100.")
_SWEEP_POPULATIONS = flags.DEFINE_list(
    "sweep_population_sizes", ["64"], "Population sizes (--population_size) of the --sweeps "
    "runs as populations, --sweep_parallel processes at a time.")
_SWEEP_MEMBERS = flags.DEFINE_integer("sweep_members", 0, "Only the first N members of each "
                                     "of --sweeps (0: all).", lower_bound=0)
_SWEEP_PARALLEL = flags.DEFINE_integer("sweep_parallel", 2, "Processes at once in the "
                                       "runs of --sweeps.", lower_bound=1)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  # "compile s" times XLA compiling: never a read from JAX_COMPILATION_CACHE_DIR.
  jax.config.update("jax_enable_compilation_cache", False)
  env = benchmark.environment()
  output = _OUTPUT.value or os.path.join(
      "benchmarks", f"benchmark-{env['platform']}-{env['device_count']}d-"
      f"{time.strftime('%Y%m%d-%H%M%S')}.json")
  if os.path.exists(output):
    sys.exit(f"FATAL --output={output} exists; benchmark results are never overwritten.")
  try:
    batch_sizes = [int(b) for b in _BATCHES.value]
    for b in batch_sizes:
      parallel.per_device(b, "--batch_sizes")
  except ValueError as e:
    sys.exit(f"FATAL --batch_sizes={','.join(_BATCHES.value)}: {e}")
  configs = [_CONFIG.value]
  try:
    impls = key_impls.check_key_impls(_KEY_IMPLS.value, "--key_impls") if _KEY_IMPLS.value else []
  except validation.ConfigError as e:
    sys.exit(f"FATAL {e}")
  timing = {}  # product timings, shared: each distinct product is timed once
  rows = [benchmark.measure_peak()]
  logging.info("Device: %s; large matmul %.1f GFLOP/s", env, rows[0]["gflops_per_s"])
  try:
    baselines = []
    if _CONV.value:
      configs.append(validation.load_config_file(_CONV.value, "conv_config"))
      if _CONV_BASELINE.value and batch_sizes:
        baselines.append(benchmark.with_overrides(configs[-1], _CONV_BASELINE.value))
    reference = (_REFERENCE.value and jax.device_count() == 1
                 and not reference_loop.unsupported(_CONFIG.value))
    for config, sizes in ([(c, batch_sizes) for c in configs]
                          + [(c, batch_sizes[:1]) for c in baselines]):
      mine = config is _CONFIG.value
      for batch_size in sizes:
        rows.append(benchmark.measure_train(config, batch_size, repeats=_REPEATS.value,
                                            timing=timing, breakdown=mine and _BREAKDOWN.value))
        if mine and reference:
          rows.append(benchmark.measure_reference(
              config, batch_size, rows[-1]["steps_per_dispatch"], repeats=_REPEATS.value,
              timing=timing, breakdown=_BREAKDOWN.value))
        logging.info("%s", benchmark.format_table(rows[-2 if mine and reference else -1:]))
        if mine and impls:
          steps = next(r for r in reversed(rows) if r["kind"] == "train")["steps_per_dispatch"]
          rows.append(key_impls.measure_train(config, batch_size, steps, impls,
                                              repeats=_REPEATS.value))
          logging.info("%s", key_impls.format_table(rows[-1:]))
    if _SGD.value and batch_sizes and _CONFIG.value.optim.optimizer != "sgd":
      sgd = copy.deepcopy(_CONFIG.value)
      sgd.optim.optimizer = "sgd"
      rows.append(benchmark.measure_train(sgd, batch_sizes[0], repeats=_REPEATS.value,
                                          timing=timing))
    if _K.value:
      rows.append(benchmark.measure_eval(_CONFIG.value, _K.value, _EXAMPLES.value,
                                         repeats=max(1, _REPEATS.value // 2), timing=timing))
      if impls:
        rows.append(key_impls.measure_eval(_CONFIG.value, _K.value, _EXAMPLES.value, impls,
                                           repeats=max(1, _REPEATS.value // 2)))
    if batch_sizes:
      population_config = copy.deepcopy(_CONFIG.value)
      population_config.batch_size = batch_sizes[0]
      sizes = [int(m) for m in _POPULATIONS.value]
      if sizes:  # on several devices, both ways members can share them, where both exist
        rows += populations.measure_populations(population_config, sizes,
                                                ("batch", "members"), repeats=_REPEATS.value)
    for spec in _SWEEPS.value:
      rows += populations.measure_sweep(
          spec, _SWEEP_OVERRIDES.value, parallel_processes=_SWEEP_PARALLEL.value,
          population_sizes=[int(m) for m in _SWEEP_POPULATIONS.value],
          num_members=_SWEEP_MEMBERS.value)
  except validation.ConfigError as e:
    sys.exit(f"FATAL {e}")
  print(benchmark.format_table(rows))
  if impls:
    print(key_impls.format_table(rows))
  print(populations.format_rows(rows))
  os.makedirs(os.path.dirname(output) or ".", exist_ok=True)
  with open(output, "x") as f:
    json.dump({"environment": env, "measurements": rows}, f, indent=1)
  print(f"Wrote {output}")


if __name__ == "__main__":
  cli.run(main, "benchmark")
