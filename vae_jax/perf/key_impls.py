"""The train step and IWAE evaluation under each of JAX's key implementations, in one run.

Every member of a run draws per example: a key per example (``pipeline.example_keys``,
one ``fold_in`` each) and that example's own noise from it. JAX can hash and draw
with other algorithms than Threefry-2x32 (``jax_default_prng_impl``: ``rbg`` and
``unsafe_rbg`` draw with XLA's RngBitGenerator, the Philox variants with Philox).
Which to use is a trade of speed against what the project's figures rest on:
the draws of an example must not depend on the batch it is in or on how many
devices share the batch. So each implementation's program is built (keys made,
traced, compiled) under that implementation and then timed in turn with the others
and with the hand-written loop (``reference``): on a shared machine only figures
taken in one run, alternating, compare.

``jax_default_prng_impl`` is not part of JAX's compilation cache key: a function
traced under one implementation is reused under another wherever the raw key
arrays have the same shape (Threefry's and Philox-4x32's are both uint32[2]).
Each implementation therefore gets programs of its own, and every dispatch runs
with its implementation set (``key_impl``).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import models
from vae_jax import parallel
from vae_jax import validation
from vae_jax.data import datasets
from vae_jax.data import pipeline
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.perf import benchmark
from vae_jax.perf import reference

# jax_default_prng_impl's values in the JAX this project pins (jax 0.10).
KEY_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg", "philox4x32", "philox2x32", "threefry4x32")
# The implementation every run so far used: JAX's default.
DEFAULT_KEY_IMPL = "threefry2x32"
# The name of the train rows' second Threefry program (the A/A control).
CONTROL = "threefry2x32 (again)"

# The benchmark's own timing and programs, so that these rows are measured as its others are.
# pylint: disable=protected-access
_best_seconds = benchmark._best_seconds
_compile_and_best_seconds = benchmark._compile_and_best_seconds
_TrainProgram = benchmark._TrainProgram
_describe_model = benchmark._describe_model
# pylint: enable=protected-access


def check_key_impls(names: Sequence[str], field: str) -> list[str]:
  """``names`` if each is a known key implementation (the first being Threefry's, the baseline)."""
  names = list(names)
  bad = [n for n in names if n not in KEY_IMPLS]
  if bad or not names:
    raise validation.ConfigError(f"{field}={','.join(names)}: unknown key implementation "
                                 f"{','.join(bad) or '(none)'}; valid: {', '.join(KEY_IMPLS)}.")
  if names[0] != DEFAULT_KEY_IMPL:  # every ratio is against today's draws
    names = [DEFAULT_KEY_IMPL] + [n for n in names if n != DEFAULT_KEY_IMPL]
  return list(dict.fromkeys(names))


@contextlib.contextmanager
def key_impl(name: str) -> Iterator[None]:
  """Keys made and programs traced inside use implementation ``name``; restored after."""
  previous = jax.config.jax_default_prng_impl
  jax.config.update("jax_default_prng_impl", name)
  try:
    yield
  finally:
    jax.config.update("jax_default_prng_impl", previous)


def _alternate(programs: dict[str, tuple[str | None, Callable[[], Any]]],
               repeats: int) -> dict[str, float]:
  """Best seconds of each program, run in turn ``repeats`` times, each under its implementation.

  ``programs``: name -> (key implementation or None (the current one), fn). Each
  round starts one program further on, so that no program always follows the same one.
  """
  best, names = {name: np.inf for name in programs}, list(programs)
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      impl, run = programs[name]
      with key_impl(impl) if impl else contextlib.nullcontext():
        best[name] = min(best[name], _best_seconds(run, 1))
  return best


def make_draws(batch: int, latent_dim: int, image_shape: tuple[int, ...], preprocessing: str,
               steps: int) -> Callable[[jax.Array], jax.Array]:
  """fn(run key) -> a sum: ``steps`` train steps' random draws and nothing else, in one scan.

  Per step, what ``training.step`` draws on one device: the pixel and latent
  streams' keys, a key per example in each, each example's latent noise and, with
  dynamic binarization, its pixels. Timed beside the step, it bounds what any key
  implementation can save: the step cannot get faster than by its draws' time.
  """
  positions = jnp.arange(batch)

  def draws(rng: jax.Array) -> jax.Array:
    def body(total: jax.Array, step: jax.Array) -> tuple[jax.Array, None]:
      keys = lambda s: pipeline.example_keys(pipeline.stream_key(rng, s, step), positions)
      eps = jax.vmap(lambda k: jax.random.normal(k, (latent_dim,)))(keys(pipeline.STREAM_LATENT))
      total = total + jnp.sum(eps)
      if preprocessing != "binary":
        pixels = pipeline.preprocess(jnp.full((batch, *image_shape), 128, jnp.uint8),
                                     keys(pipeline.STREAM_PIXELS), preprocessing)
        total = total + jnp.sum(pixels)
      return total, None

    return jax.lax.scan(body, jnp.zeros(()), jnp.arange(steps))[0]

  return draws


def measure_train(config: ml_collections.ConfigDict, batch_size: int, steps: int,
                  impls: Sequence[str], *, repeats: int = 5) -> dict[str, Any]:
  """Seconds per step of ``config``'s train chunk under each of ``impls``, alternating.

  Dispatches of ``steps`` steps; with them, on one device and where ``config`` has
  one, the hand-written loop (one key per batch), whose ratio says what the
  per-example draws cost under each implementation.
  """
  impls = check_key_impls(impls, "key_impls")
  programs, compile_seconds, share = {}, {}, {}
  # A second, separate Threefry program: the A/A pair's ratio is this run's noise.
  for name, impl in [(i, i) for i in impls] + [(CONTROL, DEFAULT_KEY_IMPL)]:
    with key_impl(impl):
      program = _TrainProgram(config, batch_size)
      run = lambda program=program: program.dispatch(steps)
      compile_seconds[name] = _compile_and_best_seconds(run, 1)[0]
      programs[name] = (impl, run)
      if name == CONTROL:
        continue
      draws = jax.jit(make_draws(program.spec.per_device_batch, config.model.latent_dim,
                                 datasets.info(config.data.name).image_shape,
                                 program.spec.preprocessing, steps))
      rng = program.state.rng
      jax.block_until_ready(draws(rng))
      programs[f"draws:{impl}"] = (impl, lambda draws=draws, rng=rng: draws(rng))
  if jax.device_count() == 1 and not reference.unsupported(config):
    tx = optax.adam(config.optim.learning_rate)
    carry, images, perm = reference.start(config, program.images["image"], tx)
    fn = jax.jit(reference.make_chunk(tx, batch_size, config.model.latent_dim, steps),
                 donate_argnums=(0,))
    share["carry"] = carry

    def run_reference():
      share["carry"], losses = fn(share["carry"], images, perm)
      return losses

    jax.block_until_ready(run_reference())
    programs["reference"] = (None, run_reference)
  best = {k: v / steps for k, v in _alternate(programs, repeats).items()}
  rows = {impl: {"seconds_per_step": best[impl], "examples_per_s": batch_size / best[impl],
                 "compile_seconds": compile_seconds[impl],
                 "speed_over_threefry2x32": best[DEFAULT_KEY_IMPL] / best[impl],
                 "draws_seconds_per_step": best[f"draws:{impl}"],
                 "draws_share_of_step": best[f"draws:{impl}"] / best[impl]}
          for impl in impls}
  if "reference" in best:
    for impl in impls:
      rows[impl]["speed_over_reference"] = best["reference"] / best[impl]
  return {"kind": "key_impls_train", "model": _describe_model(config),
          "batch_size": batch_size, "steps_per_dispatch": steps, "repeats": repeats,
          "reference_seconds_per_step": best.get("reference"),
          "control": {"seconds_per_step": best[CONTROL],
                      "speed_over_threefry2x32": best[DEFAULT_KEY_IMPL] / best[CONTROL]},
          "impls": rows}


def measure_eval(config: ml_collections.ConfigDict, num_importance_samples: int,
                 num_examples: int, impls: Sequence[str], *, repeats: int = 3) -> dict[str, Any]:
  """Seconds of IWAE evaluation (k = ``num_importance_samples``) under each of ``impls``."""
  impls = check_key_impls(impls, "key_impls")
  validation.validate(config)
  name = config.data.name
  model = models.build(config, datasets.info(name))
  images = benchmark.synthetic_split(name, num_examples, config.seed)
  programs, compile_seconds = {}, {}
  for name, impl in [(i, i) for i in impls] + [(CONTROL, DEFAULT_KEY_IMPL)]:
    with key_impl(impl):
      params = parallel.replicate(model.init(jax.random.PRNGKey(config.seed)))
      evaluator = evaluation.Evaluator(model, validation.preprocessing_of(config),
                                       config.eval.seed, images, config.eval.batch_size,
                                       config.eval.iwae_chunk_size)
      run = lambda e=evaluator, p=params: e.per_example(p, num_importance_samples)
      compile_seconds[name] = _compile_and_best_seconds(run, 1)[0]
      programs[name] = (impl, run)
  best = _alternate(programs, repeats)
  rows = {impl: {"seconds": best[impl], "examples_per_s": num_examples / best[impl],
                 "compile_seconds": compile_seconds[impl],
                 "speed_over_threefry2x32": best[DEFAULT_KEY_IMPL] / best[impl]}
          for impl in impls}
  return {"kind": "key_impls_eval", "model": _describe_model(config),
          "num_importance_samples": num_importance_samples, "num_examples": num_examples,
          "repeats": repeats, "impls": rows,
          "control": {"seconds": best[CONTROL],
                      "speed_over_threefry2x32": best[DEFAULT_KEY_IMPL] / best[CONTROL]}}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
  """A Markdown table of ``measure_train`` and ``measure_eval`` rows (docs/performance.md)."""
  lines = ["| what | key implementation | ms | examples/s | compile s | speed / threefry2x32 "
           "| speed / hand-written loop | draws alone, ms (share) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if r["kind"] == "key_impls_train":
      what = f"train, batch {r['batch_size']} ({r['steps_per_dispatch']} steps)"
      unit = "seconds_per_step"
    elif r["kind"] == "key_impls_eval":
      what, unit = f"IWAE k={r['num_importance_samples']}, {r['num_examples']} images", "seconds"
    else:
      continue
    for impl, m in r["impls"].items():
      loop = f"{m['speed_over_reference']:.3f}" if "speed_over_reference" in m else "–"
      draws = (f"{1e3 * m['draws_seconds_per_step']:.3f} ({m['draws_share_of_step']:.1%})"
               if "draws_seconds_per_step" in m else "–")
      lines.append(f"| {what} | {impl} | {1e3 * m[unit]:.2f} | {m['examples_per_s']:,.0f} | "
                   f"{m['compile_seconds']:.2f} | {m['speed_over_threefry2x32']:.3f} | {loop} | "
                   f"{draws} |")
    if "control" in r:  # the same program as the first row's: their ratio is the noise
      lines.append(f"| {what} | {CONTROL} | {1e3 * r['control'][unit]:.2f} | | | "
                   f"{r['control']['speed_over_threefry2x32']:.3f} | | |")
  return "\n".join(lines)


def example_draws(impl: str, positions: np.ndarray, shape: tuple[int, ...] = (20,),
                  seed: int = 0) -> np.ndarray:
  """Each example's normal draw at ``positions`` of a global batch, drawn as the step draws.

  One device of two draws the second half of the positions as a batch of its own:
  a key implementation keeps the device-count invariance only if those rows are
  the rows of the whole batch's draw (``tests/perf/test_key_impls.py``).
  """
  def draw(p: jax.Array) -> jax.Array:
    key = pipeline.stream_key(jax.random.PRNGKey(seed), pipeline.STREAM_LATENT, 0)
    return jax.vmap(lambda e: jax.random.normal(e, shape))(pipeline.example_keys(key, p))

  with key_impl(impl):
    return np.asarray(jax.jit(draw)(jnp.asarray(positions)))  # traced here, under ``impl``
