"""Throughput of training and IWAE evaluation, against the device's own matmul roofline.

Each measurement runs the code a training run runs (``training``'s data-parallel
train chunk with the data on the device; ``evaluation``'s sharded IWAE), timed
after compilation and warm-up, as the best of several repeats. Next to it stands
the program's roofline (``roofline``): its matrix products timed alone on the
same device in the same process. Pixel values do not change the cost, so the
data are random uint8 images of the configured dataset's shape and size.
"""

from __future__ import annotations

import copy
import resource
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import models
from vae_jax import parallel
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.perf import ops
from vae_jax.perf import reference
from vae_jax.perf import roofline
from vae_jax.training import state as state_lib
from vae_jax.training import step as training

# Examples per split of the datasets the benchmark imitates (train, test).
SPLIT_SIZES = {"binarized_mnist": (50_000, 10_000), "cifar10": (50_000, 10_000),
               "mnist_5k": (4_000, 1_000), "digits": (1_437, 360), "squares": (1_000, 200)}
DEFAULT_SPLIT_SIZES = (60_000, 10_000)
# The square matrix product that shows the device's best rate, for context.
PEAK_SHAPE = 2048


def synthetic_split(name: str, num: int, seed: int) -> dict[str, np.ndarray]:
  """A batch dict of random uint8 images shaped like dataset ``name`` ({0, 1} if it is
  binary), with random labels where the dataset has labels."""
  rng = np.random.default_rng(seed)
  info = datasets.info(name)
  high = 2 if info.binary else 256
  out = {"image": rng.integers(0, high, (num, *info.image_shape), dtype=np.uint8)}
  if info.num_classes:
    out["label"] = rng.integers(0, info.num_classes, num, dtype=np.int32)
  return out


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
  """The fastest of ``repeats`` runs: the least disturbed by anything else on the machine
  (the roofline's products are timed the same way)."""
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    samples.append(time.perf_counter() - start)
  return min(samples)


def memory() -> dict[str, Any]:
  """Peak host memory of this process and, where the backend reports it, device memory."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return {"peak_host_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "peak_device_bytes": stats.get("peak_bytes_in_use")}


def _compile_and_best_seconds(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
  """(compile seconds, best seconds of ``repeats`` runs) of a function compiled on first call.

  The compile time is the first run's (tracing, compiling, running) less a compiled run's.
  """
  first = _best_seconds(fn, 1)
  best = _best_seconds(fn, repeats)
  return max(first - best, 0.0), best


def _roofline(found: Sequence[roofline.Product], program_seconds: float,
              timing: dict) -> dict[str, Any]:
  """The roofline figures of one program run (per device) against its measured time."""
  seconds = roofline.time_products([p for p in found if p.key not in timing])
  timing.update(seconds)
  limit = roofline.roofline_seconds(found, timing)
  flops = roofline.total_flops(found)
  return {"product_flops_per_device": flops, "roofline_seconds": limit,
          "roofline_ratio": limit / program_seconds,
          "product_gflops_per_s": flops / program_seconds / 1e9,
          "roofline_gflops_per_s": flops / limit / 1e9,
          "products": [p.describe() for p in found]}


def _breakdown(fn: Callable, args: tuple, steps: int, static: tuple = ()) -> dict[str, Any]:
  """``ops.breakdown`` of ``fn(*args, *static)`` (a jit or pmap, compiled here) per step."""
  compiled = fn.lower(*args, *static).compile()
  return ops.breakdown(compiled.as_text(), lambda: compiled(*args), steps)


class _TrainProgram:
  """The training run's data-parallel chunk of ``config`` at ``batch_size``, ready to dispatch."""

  def __init__(self, config: ml_collections.ConfigDict, batch_size: int):
    config = copy.deepcopy(config)
    config.batch_size = batch_size
    validation.validate(config)
    self.config, name = config, config.data.name
    self.num_train = SPLIT_SIZES.get(name, DEFAULT_SPLIT_SIZES)[0]
    self.model = models.build(config, datasets.info(name))
    self.tx = state_lib.make_optimizer(config.optim, 1_000_000)
    self.spec = training.spec_from_config(config, self.num_train,
                                          validation.preprocessing_of(config))
    self.state = state_lib.create_train_state(config.seed, self.model, self.tx)
    self.images = synthetic_split(name, self.num_train, config.seed)
    self.chunk = training.DataParallelTrainChunk(self.model, self.tx, self.spec)
    self.replicated_images = parallel.replicate(self.images)
    self.rstate, self.step = parallel.replicate(self.state), 0

  def dispatch(self, steps: int):
    self.rstate, metrics = self.chunk(self.rstate, {}, self.replicated_images, self.step,
                                      steps)
    self.step += steps
    return metrics


def measure_train(config: ml_collections.ConfigDict, batch_size: int, *, repeats: int = 5,
                  dispatch_seconds: float = 2.0, timing: dict | None = None,
                  breakdown: bool = False) -> dict[str, Any]:
  """Training examples/s of ``config`` at global ``batch_size``, and its roofline ratio.

  Times dispatches of scanned steps, as training runs them: ``config.steps_per_dispatch``
  steps, or fewer where that many would take over ``dispatch_seconds``. With
  ``breakdown``, also where a step's time goes (``ops.breakdown``).
  """
  program = _TrainProgram(config, batch_size)
  config, model, tx, spec = program.config, program.model, program.tx, program.spec

  def timed_dispatches(steps: int, count: int) -> tuple[float, float]:
    """(compile seconds, best seconds per step) of dispatches of ``steps`` steps."""
    compile_seconds, per_dispatch = _compile_and_best_seconds(
        lambda: program.dispatch(steps), count)
    return compile_seconds, per_dispatch / steps

  compile_seconds, seconds = timed_dispatches(1, 1)  # a first estimate
  steps = max(1, min(config.steps_per_dispatch, int(dispatch_seconds / seconds)))
  if steps > 1:
    compile_seconds, seconds = timed_dispatches(steps, repeats)
  else:
    seconds = timed_dispatches(1, repeats)[1]
  perms = tuple(np.arange(program.num_train, dtype=np.int32)
                for _ in range(training.epochs_touched(spec, 1)))
  found = roofline.products(
      training.make_train_chunk(model, tx, spec), program.state, {}, program.images, perms, 1,
      axis_env=[(parallel.AXIS_NAME, parallel.device_count())], static_argnums=(4,))
  row = {"kind": "train", "model": _describe_model(config), "batch_size": batch_size,
         "per_device_batch": spec.per_device_batch, "steps_per_dispatch": steps,
         "examples_per_s": batch_size / seconds, "steps_per_s": 1.0 / seconds,
         "seconds_per_step": seconds, "compile_seconds": compile_seconds,
         **_roofline(found, seconds, {} if timing is None else timing), **memory()}
  if breakdown:
    fn = parallel.data_parallel(training.make_train_chunk(model, tx, spec), static_argnums=(4,))
    perms = program.chunk.permutations(program.rstate.rng, program.step, steps)
    row["breakdown"] = _breakdown(fn, (program.rstate, {}, program.replicated_images, perms),
                                  steps, (steps,))
  return row


def measure_reference(config: ml_collections.ConfigDict, batch_size: int, steps: int, *,
                      repeats: int = 5, timing: dict | None = None,
                      breakdown: bool = False) -> dict[str, Any]:
  """``measure_train``'s figures for a plain hand-written loop of the same MLP VAE
  (``reference``), on one device, ``steps`` steps a dispatch (the train row's).

  Its dispatches alternate with the project's train chunk's and with the same
  products run alone (``roofline.products_only``): ``alongside`` holds the best
  of each and their ratios, which a shared machine's load affects alike.
  """
  why = reference.unsupported(config)
  if why:
    raise validation.ConfigError(f"No reference row: {why}.")
  program = _TrainProgram(config, batch_size)
  tx = optax.adam(config.optim.learning_rate)
  carry, images, perm = reference.start(config, program.images["image"], tx)
  latent_dim = config.model.latent_dim
  fn = jax.jit(reference.make_chunk(tx, batch_size, latent_dim, steps), donate_argnums=(0,))
  holder = {"carry": carry}

  def dispatch():
    holder["carry"], losses = fn(holder["carry"], images, perm)
    return losses

  compile_seconds = _compile_and_best_seconds(dispatch, 1)[0]
  found = roofline.products(reference.make_chunk(tx, batch_size, latent_dim, 1),
                            holder["carry"], images, perm)
  programs = {"reference": dispatch, "train": lambda: program.dispatch(steps),
              "products": roofline.products_only(found, steps)}
  best = {name: np.inf for name in programs}
  for name, run in programs.items():
    jax.block_until_ready(run())  # compiled, warm
  for _ in range(repeats):  # in turn: a shared machine's load falls on each alike
    for name, run in programs.items():
      best[name] = min(best[name], _best_seconds(run, 1) / steps)
  seconds = best["reference"]
  row = {"kind": "reference", "model": f"hand-written loop: {_describe_model(program.config)}",
         "batch_size": batch_size, "per_device_batch": batch_size, "steps_per_dispatch": steps,
         "examples_per_s": batch_size / seconds, "steps_per_s": 1.0 / seconds,
         "seconds_per_step": seconds, "compile_seconds": compile_seconds,
         "alongside": {"train_seconds_per_step": best["train"],
                       "reference_seconds_per_step": seconds,
                       "products_seconds_per_step": best["products"],
                       "train_speed_over_reference": seconds / best["train"],
                       "train_roofline_ratio": best["products"] / best["train"],
                       "reference_roofline_ratio": best["products"] / seconds},
         **_roofline(found, seconds, {} if timing is None else timing), **memory()}
  if breakdown:
    plain = jax.jit(reference.make_chunk(tx, batch_size, latent_dim, steps))
    row["breakdown"] = _breakdown(plain, (holder["carry"], images, perm), steps)
  return row


def measure_eval(config: ml_collections.ConfigDict, num_importance_samples: int,
                 num_examples: int, *, repeats: int = 3,
                 timing: dict | None = None) -> dict[str, Any]:
  """IWAE evaluation examples/s with k samples on ``num_examples`` test images."""
  validation.validate(config)
  name = config.data.name
  preprocessing = validation.preprocessing_of(config)
  model = models.build(config, datasets.info(name))
  params = model.init(jax.random.PRNGKey(config.seed))
  images = synthetic_split(name, num_examples, config.seed)
  evaluator = evaluation.Evaluator(model, preprocessing, config.eval.seed, images,
                                   config.eval.batch_size, config.eval.iwae_chunk_size)
  replicated = parallel.replicate(params)
  compile_seconds, seconds = _compile_and_best_seconds(
      lambda: evaluator.per_example(replicated, num_importance_samples), repeats)
  block = lambda x: np.zeros(x.shape[1:], x.dtype)  # what one device's program sees
  found = roofline.products(evaluator.per_device_fn(num_importance_samples), params,
                            jax.tree.map(block, evaluator.split.data),
                            block(evaluator.split.ids),
                            axis_env=[(parallel.AXIS_NAME, parallel.device_count())])
  full_test = SPLIT_SIZES.get(name, DEFAULT_SPLIT_SIZES)[1]
  return {"kind": "eval", "model": _describe_model(config),
          "batch_size": config.eval.batch_size, "num_importance_samples": num_importance_samples,
          "iwae_chunk_size": config.eval.iwae_chunk_size, "num_examples": num_examples,
          "examples_per_s": num_examples / seconds, "seconds": seconds,
          "full_test_split_seconds": full_test * seconds / num_examples,
          "compile_seconds": compile_seconds,
          **_roofline(found, seconds, {} if timing is None else timing), **memory()}


def measure_peak(size: int = PEAK_SHAPE) -> dict[str, Any]:
  """The device's rate on one large square float32 matrix product (context, not the roofline)."""
  lhs = jax.ShapeDtypeStruct((size, size), jnp.float32)
  found = roofline.products(jnp.matmul, lhs, lhs)
  seconds = roofline.time_products(found)
  return {"kind": "peak", "shape": [size, size, size],
          "gflops_per_s": roofline.total_flops(found) / roofline.roofline_seconds(
              found, seconds) / 1e9}


def with_overrides(config: ml_collections.ConfigDict,
                   items: Sequence[str]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with FIELD=VALUE ``items`` applied, each value cast to the field's type.

  A baseline row is the same config with a field or two changed (e.g. another
  formulation of a layer), measured in the same run: on a shared machine only
  figures from one run compare.
  """
  config = copy.deepcopy(config)
  for item in items:
    field, sep, text = item.partition("=")
    old = config.get(field, None) if sep else None
    if old is None or isinstance(old, ml_collections.ConfigDict):
      raise validation.ConfigError(f"{item!r}: expected FIELD=VALUE with FIELD a field of the "
                                   f"config (e.g. model.conv_impl=lax).")
    try:
      if isinstance(old, bool):  # before int: a bool is an int
        value = {"true": True, "false": False}[text.lower()]
      else:
        value = type(old)(text)
    except (KeyError, ValueError):
      raise validation.ConfigError(f"{item!r}: {text!r} is not a valid "
                                   f"{type(old).__name__}.") from None
    config.update_from_flattened_dict({field: value})
  return config


def _describe_model(config: ml_collections.ConfigDict) -> str:
  """The model's family and fields, the data and the optimizer, in one line."""
  fields = ", ".join(f"{k} {v}" for k, v in sorted(config.model.items()) if k != "name")
  return f"{config.model.name} ({fields}), {config.data.name}, {config.optim.optimizer}"


def environment() -> dict[str, Any]:
  device = jax.local_devices()[0]
  return {"platform": jax.default_backend(), "device_kind": device.device_kind,
          "device_count": parallel.device_count(), "process_count": jax.process_count(),
          "jax": jax.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """A Markdown table of measurements (the tables of docs/performance.md)."""
  head = ("| what | model | batch | examples/s | steps/s | compile s | GFLOP/s | roofline "
          "GFLOP/s | roofline ratio |\n|---|---|---|---|---|---|---|---|---|")
  lines = [head]
  for r in rows:
    if r["kind"] not in ("train", "reference", "eval"):  # peak; key_impls' own table
      continue
    what = (r["kind"] if r["kind"] in ("train", "reference") else
            f"IWAE k={r['num_importance_samples']}, {r['num_examples']} test images")
    steps = f"{r['steps_per_s']:.1f}" if "steps_per_s" in r else "–"
    lines.append(
        f"| {what} | {r['model']} | {r['batch_size']} | {r['examples_per_s']:,.0f} | {steps} | "
        f"{r['compile_seconds']:.2f} | {r['product_gflops_per_s']:.1f} | "
        f"{r['roofline_gflops_per_s']:.1f} | {r['roofline_ratio']:.1%} |")
  return "\n".join(lines)
