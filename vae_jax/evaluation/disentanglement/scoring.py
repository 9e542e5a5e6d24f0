"""A saved run's representation scored by every disentanglement metric: disentanglement.json.

The representation is the encoder mean (``Model.encode``) of the run's selected
checkpoint (results.json's ``selection.checkpoint_step``; the latest for a run
still going), on the images the model sees (the run's preprocessing, keyed per
image as in evaluation), jit-compiled over fixed batches of ``BATCH`` images.
Each metric gets its own ``RandomState(seed)`` (disentanglement_lib's
``evaluation.random_seed = 0``), so reruns agree to the last digit and
metrics do not depend on which others ran. ``scale`` multiplies the sample
counts, of every metric or of named ones (1: disentanglement_lib's defaults); the
counts used are recorded with each metric, as is its time.
The file is written next to results.json. A run already scored gains only the
metrics its file lacks (scored at the same checkpoint and seed); a metric in the
file is never recomputed or replaced, so adding DCI to a sweep scored without it
costs DCI alone.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vae_jax.data import datasets
from vae_jax.evaluation import evaluator as evaluation
from vae_jax.evaluation import saved_run
from vae_jax.evaluation.disentanglement import beta_vae
from vae_jax.evaluation.disentanglement import codes as codes_lib
from vae_jax.evaluation.disentanglement import dci
from vae_jax.evaluation.disentanglement import factor_vae
from vae_jax.evaluation.disentanglement import mig
from vae_jax.evaluation.disentanglement import modularity
from vae_jax.evaluation.disentanglement import sap
from vae_jax.evaluation.disentanglement import unsupervised
from vae_jax.training import workdir as workdir_lib

OUTPUT_FILE = "disentanglement.json"
BATCH = 1024

# name -> (score function, its sample-count arguments at disentanglement_lib's defaults).
METRICS: dict[str, tuple[Callable[..., dict], dict[str, int]]] = {
    "beta_vae": (beta_vae.score, {"num_train": 10_000, "num_eval": 5_000}),
    "factor_vae": (factor_vae.score, {"num_train": 10_000, "num_eval": 5_000,
                                      "num_variance_estimate": 10_000}),
    "mig": (mig.score, {"num_train": 10_000}),
    "dci": (dci.score, {"num_train": 10_000, "num_test": 5_000}),
    "sap": (sap.score, {"num_train": 10_000, "num_test": 5_000}),
    "modularity_explicitness": (modularity.score, {"num_train": 10_000, "num_test": 5_000}),
    "unsupervised": (unsupervised.score, {"num_train": 10_000}),
}

# The headline number of each metric: the columns sweep tables show.
HEADLINES = {"beta_vae": "eval_accuracy", "factor_vae": "eval_accuracy", "mig": "discrete_mig",
             "dci": "disentanglement", "sap": "SAP_score",
             "modularity_explicitness": "modularity_score",
             "unsupervised": "gaussian_total_correlation"}


def encoder_mean(model, params, preprocessing: str, seed: int) -> codes_lib.Representation:
  """uint8 images [B, H, W, C] -> encoder means [B, d] (numpy), compiled once per BATCH."""
  @jax.jit
  def encode(images: jax.Array) -> jax.Array:
    ids = jnp.arange(images.shape[0])
    return model.encode(params, {"image": evaluation.eval_inputs(images, ids, preprocessing,
                                                                   seed)})

  def represent(images: np.ndarray) -> np.ndarray:
    out = []
    for start in range(0, len(images), BATCH):
      chunk = images[start:start + BATCH]
      padded = np.concatenate([chunk, np.zeros((BATCH - len(chunk), *chunk.shape[1:]),
                                               chunk.dtype)])
      out.append(np.asarray(encode(padded))[:len(chunk)])
    return np.concatenate(out).astype(np.float64)
  return represent


def scaled(counts: dict[str, int], scale: float) -> dict[str, int]:
  return {k: max(2, int(round(v * scale))) for k, v in counts.items()}


def parse_scale(items: Optional[list[str]]) -> dict[str, float]:
  """--scale items -> {metric: factor}: 'F' sets every metric, 'METRIC=F' one of them.

  ['0.1', 'beta_vae=0.01'] scales every count by 0.1 and the BetaVAE score's by 0.01.
  """
  default, named = 1.0, {}
  for item in items or ():
    name, sep, value = item.rpartition("=")
    try:
      factor = float(value)
    except ValueError:
      factor = -1.0
    if (sep and name not in METRICS) or not factor > 0:
      raise ValueError(f"--scale item {item!r}: use a factor > 0 (every metric) or METRIC=F "
                       f"with METRIC in {', '.join(METRICS)}.")
    if sep:
      named[name] = factor
    else:
      default = factor
  return {name: named.get(name, default) for name in METRICS}


def score_all(sampler, representation: codes_lib.Representation, *, seed: int = 0,
              scales: Optional[dict[str, float]] = None,
              metrics: Optional[list[str]] = None) -> dict[str, Any]:
  """{metric: {its scores..., "seconds", "sample_counts"}} for ``metrics`` (default: all)."""
  out = {}
  for name in metrics or list(METRICS):
    fn, counts = METRICS[name]
    counts = scaled(counts, (scales or {}).get(name, 1.0))
    start = time.time()
    scores = fn(sampler, representation, np.random.RandomState(seed), **counts)
    out[name] = {**scores, "sample_counts": counts, "seconds": time.time() - start}
    logging.info("%s: %s (%.0f s)", name, {k: round(v, 4) for k, v in scores.items()
                                           if isinstance(v, (int, float))},
                 out[name]["seconds"])
  return out


def selected_step(workdir: str) -> Optional[int]:
  """The checkpoint results.json says was selected; None (the latest) before it exists."""
  results = workdir_lib.read_json(os.path.join(workdir, workdir_lib.RESULTS_FILE))
  return None if not results else results["selection"].get("checkpoint_step")


def score_run(workdir: str, *, seed: int = 0, scale: Optional[list[str]] = None,
              metrics: Optional[list[str]] = None) -> dict[str, Any]:
  """Scores the run in ``workdir`` into WORKDIR/disentanglement.json: the metrics it lacks.

  A first scoring writes the file; a later one adds the requested metrics the file
  does not hold yet, keeping every score in it, and is refused when there are none
  (the scores are deterministic) or when the run now selects another checkpoint or
  the seed differs (one file, one representation and one seed).
  """
  start = time.time()
  workdir = os.path.abspath(workdir)
  out_path = os.path.join(workdir, OUTPUT_FILE)
  unknown = sorted(set(metrics or ()) - set(METRICS))
  if unknown:
    raise ValueError(f"--metrics: unknown {unknown}; valid: {', '.join(METRICS)}.")
  scales = parse_scale(scale)
  earlier = workdir_lib.read_json(out_path)
  todo = missing_metrics(earlier, metrics)
  if not todo:
    raise workdir_lib.WorkdirError(
        f"{out_path} exists and holds every metric asked for: this run was already scored "
        f"(the scores are deterministic). Move it away to rescore.")
  step = selected_step(workdir)
  run = saved_run.load_run(workdir, step)
  if earlier is not None and (earlier["step"], earlier["seed"]) != (run.step, seed):
    raise workdir_lib.WorkdirError(
        f"{out_path} scored step {earlier['step']} with --seed={earlier['seed']}; the run now "
        f"selects step {run.step} and this is --seed={seed}: one file holds one checkpoint's "
        f"scores at one seed. Move it away to rescore.")
  sampler = datasets.ground_truth_sampler(run.dataset.name, run.config.data.manual_dir)
  representation = encoder_mean(run.model, run.params, run.preprocessing, run.config.eval.seed)
  scores = score_all(sampler, representation, seed=seed, scales=scales, metrics=todo)
  if earlier is None:
    record = {"step": run.step, "checkpoint": run.checkpoint, "dataset": run.dataset.name,
              "representation": "encoder mean", "seed": seed,
              "scale": {name: scales[name] for name in todo}, "factors": list(sampler.grid.names),
              "scores": scores, "wall_time_s": time.time() - start,
              "versions": workdir_lib.versions()}
  else:
    record = {**earlier, "scale": {**earlier["scale"], **{name: scales[name] for name in todo}},
              "scores": {**earlier["scores"], **scores},
              "added": [*earlier.get("added", []),
                        {"metrics": todo, "wall_time_s": time.time() - start,
                         "versions": workdir_lib.versions()}]}
  workdir_lib.write_json(out_path, record)
  logging.info("Wrote %s (%s)", out_path, ", ".join(todo))
  return record


def missing_metrics(record: Optional[dict[str, Any]],
                    metrics: Optional[list[str]] = None) -> list[str]:
  """The metrics asked for (default: all) that a disentanglement.json (or None) lacks."""
  held = (record or {}).get("scores", {})
  return [name for name in metrics or list(METRICS) if name not in held]


def headline(record: dict[str, Any]) -> dict[str, float]:
  """{metric: its headline score} of a disentanglement.json (the tables' columns)."""
  return {name: record["scores"][name][key] for name, key in HEADLINES.items()
          if name in record.get("scores", {})}


def read_record(workdir: str) -> dict[str, Any]:
  """A run's disentanglement.json."""
  record = workdir_lib.read_json(os.path.join(os.path.abspath(workdir), OUTPUT_FILE))
  if record is None:
    raise workdir_lib.WorkdirError(f"No {OUTPUT_FILE} in {workdir}: score the run first.")
  return record


# The base image of the traversals: a heart of the largest scale, upright, in the centre.
TRAVERSAL_BASE = (2, 5, 0, 16, 16)


def draw_traversals(workdir: str, record: dict[str, Any], path: str) -> None:
  """Latent traversals of the scored checkpoint, each row labelled by its factor (pictures.py)."""
  from vae_jax.evaluation.disentanglement import pictures  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  results = workdir_lib.read_json(os.path.join(workdir, workdir_lib.RESULTS_FILE)) or {}
  run = saved_run.load_run(workdir, record["step"])
  sampler = datasets.ground_truth_sampler(run.dataset.name, run.config.data.manual_dir)
  kl = np.asarray(results.get("test", {}).get("kl_per_dim") or np.ones(run.model.latent_dim))
  pictures.save_traversals(run, record, kl, np.array(TRAVERSAL_BASE), sampler, path)
